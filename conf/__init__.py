"""diffbench's Hydra configs (data only: no `_target_`, no callbacks; harness/schema.py checks every key).

Importing this package (Hydra does, to read `pkg://diffbench.conf`) registers the one interpolation the
configs use beyond Hydra's own: `${path_name:X}`, X as a single safe path component, so a model given as a
checkpoint path (`model.name=/ckpts/my model`) still names one run folder under runs/.
"""

from omegaconf import OmegaConf

from ..core.io import safe_name

OmegaConf.register_new_resolver("path_name", safe_name, replace=True)
