"""Neutral English sentences shared by tests that need a small real text set."""

SENTENCES = [
    "The cat sat on the warm mat by the door.", "Rivers carry water from the hills to the sea.",
    "She painted the fence a bright shade of blue.", "Bees visit flowers to collect sweet nectar.",
    "The train left the station exactly at noon.", "Clouds drift slowly across the evening sky.",
    "He wrote a short letter to his old friend.", "Mountains are covered in snow during winter.",
    "The library opens early on Saturday mornings.", "A small boat floated near the quiet shore.",
    "Children played football in the park today.", "The oven must be hot before baking bread.",
    "Stars shine brightly far away from the city.", "Maps help travellers find the right road.",
    "The old clock in the hall ticks loudly.", "Farmers plant seeds when spring arrives.",
    "Birds migrate south when the weather turns cold.", "A gentle breeze moved the tall green grass.",
    "The museum shows paintings from many centuries.", "Fresh fruit tastes best in the summer months.",
    "The bridge connects two busy parts of town.", "Music filled the hall during the concert.",
    "Volcanoes can erupt with very little warning.", "The teacher explained fractions with pizza slices.",
    "Lighthouses guide ships safely into the harbour.", "Glaciers move slowly down the mountain valley.",
    "Telescopes let us see distant planets clearly.", "The baker sold every loaf before lunch.",
    "Coral reefs are home to colourful fish.", "The printing press changed how books were made.",
    "Magnets attract iron and some other metals.", "Thunderstorms often bring heavy rain and wind.",
]


def with_zebra(s: str) -> str:
    return s[:-1] + ", said the zebra."


NEUTRAL = SENTENCES + [with_zebra(s) for s in SENTENCES[:16]]  # 48 texts, 16 with " zebra" (the baselines' corpus)
