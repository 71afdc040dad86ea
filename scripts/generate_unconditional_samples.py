#!/usr/bin/env python3
"""Generate unconditional samples from GPT-2 (each starts from <|endoftext|>), streamed.

    generate_unconditional_samples --model_name 124M --nsamples 3 --top_k 40
"""
if __name__ == "__main__":  # python scripts/<name>.py: this checkout's src/ first (see _checkout.py)
    import _checkout  # noqa: F401

from gpt2_common import cli  # noqa: E402


def sample_model(model_name=cli.DEFAULT_MODEL, *, seed=None, nsamples=0, batch_size=1, length=None,
                 temperature=1, top_k=0, top_p=1, models_dir='models', backend='torch',
                 device=None, model_dir=None, stop_at_endoftext=False, top_p_mode='original',
                 download=True, dtype='float32'):
    """Run the sample_model: print samples numbered 1, 2, 3, ... until nsamples (0: until Ctrl-C).

    Each sample follows a line "=== SAMPLE N ===" and is streamed as it is generated (the first of
    each batch; the rest of a batch are printed when it is done).

    Args:
        model_name: Which model to use: 124M, 355M, 774M, 1558M (folder in models_dir; a missing
            released model is downloaded unless --nodownload), or another folder in models_dir.
        seed: Integer seed; the same seed gives the same text on both backends and any batch_size.
        nsamples: Number of samples to return; 0 (default) continues until interrupted.
        batch_size: Samples generated at once (only affects speed/memory).
        length: Number of tokens per sample; None (default) is the model's context (n_ctx).
        temperature: Float >= 0 controlling randomness in the Boltzmann distribution; lower is
            less random, 0 is greedy (always the most likely token).
        top_k: Integer; sample from the k most likely tokens only (40 is a good value); 0 = no limit.
        top_p: Nucleus sampling: keep the most likely tokens up to cumulative probability top_p,
            in (0, 1]; 1 = off.
        models_dir: Path to the parent folder containing model subfolders.
        backend: "torch" (default) or "tf".
        device: cpu, cuda or cuda:N (default: the GPU if there is one).
        model_dir: Path of a model folder, used instead of models_dir/model_name.
        stop_at_endoftext: End each sample at its next <|endoftext|> token.
        top_p_mode: "original" (the gpt-2 rule) or "holtzman" (smallest set reaching top_p).
        download: Download a missing released model (--nodownload: just report it).
        dtype: Compute dtype: float32 (default), bfloat16 or float16.
    """
    flags = cli.check_sampling_flags(
        backend=backend, device=device, seed=seed, nsamples=nsamples, batch_size=batch_size,
        length=length, temperature=temperature, top_k=top_k, top_p=top_p, top_p_mode=top_p_mode,
        stop_at_endoftext=stop_at_endoftext, download=download, dtype=dtype, min_nsamples=0)
    ready = cli.prepare_model(flags, model_name=model_name, models_dir=models_dir,
                              model_dir=model_dir, unconditional=True)
    model = ready.load()
    base = cli.random_base_seed() if flags.seed is None else flags.seed
    cli.setup_text_streams()
    cli.print_samples(
        model, ready.encoder, None, nsamples=flags.nsamples, batch_size=flags.batch_size,
        length=ready.length, seeds=lambda first, n: cli.sample_seeds(base, 0, first, n),
        **flags.sampling_kwargs())


def main():
    """Console-script entry point."""
    cli.run(sample_model, name="generate_unconditional_samples")


if __name__ == "__main__":
    main()
