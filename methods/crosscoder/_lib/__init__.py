"""The crosscoder library the crosscoder methods in `..` (and the one-model dictionaries of `methods/_shared/sae.py`)
build on, split by concern. Nothing here registers a method.

    module.py          the partitioned two-model dictionary (nn.Module) and its training backends (Ops)
    train.py           TrainConfig, the training loop, data initialisation, the inference threshold
    losses.py          L1 and BatchTopK objectives
    evaluate.py        held-out explained variance, L0, dead latents; latent codes and mass
    scaling.py         Latent Scaling
    reference.py       torch reference ops (the twins of the Triton kernels)
    kernels.py         Triton kernels (CUDA; TRITON_INTERPRET=1 on CPU for tests)
    method.py          data preparation and the method base shared by the crosscoders
    batchtopk_base.py  the BatchTopK crosscoder method base (batchtopk_crosscoder, dfc, random_dictionary)
    nway.py            the N-way dictionary (one section per member and per chosen subset; methods/nway/)
"""
