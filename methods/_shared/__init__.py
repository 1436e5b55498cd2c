"""Private helpers of the methods: not methods themselves (nothing here registers one), and no method imports
another method; what two methods share lives here.

    difference.py   per-token differences h_B - h_A, readouts along a direction, principal directions
    outputs.py      the two models' next-token distributions on corpus texts (kl_diff, logit_diff_tokens), and
                    the log-probability gains of the actual tokens (logprob_diff)
    chat.py         where the answer starts in a chat-formatted text (the assistant header), from token ids
    sae.py          one-model sparse autoencoders (diff_sae, dict_drift), trained as one-model crosscoders

The crosscoder library (module, training, losses, evaluation, Latent Scaling, kernels, data preparation) lives with
the crosscoder methods, in `crosscoder/_lib/`.
"""
