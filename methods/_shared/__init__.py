"""Private helpers of the methods: not methods themselves (nothing here registers one), and no method imports
another method; what two methods share lives here.

    difference.py   per-token differences h_B - h_A, readouts along a direction, principal directions
    outputs.py      the two models' next-token distributions on corpus texts (kl_diff, logit_diff_tokens), and
                    the log-probability gains of the actual tokens (logprob_diff)
    chat.py         where the answer starts in a chat-formatted text (the assistant header), from token ids
    sae.py          one-model sparse autoencoders (diff_sae, dict_drift), trained as one-model crosscoders
    crosscoder/     the crosscoder: module and backends, training, losses, evaluation, Latent Scaling,
                    the Triton kernels and their torch twins, and the method base the crosscoders share
"""
