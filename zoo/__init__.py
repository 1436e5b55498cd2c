"""The organism zoo's data: PEFT adapter folders (organisms/<name>/) and manifest.json. Code: harness/plant/zoo.py."""
