#!/usr/bin/env python3
"""Interactively sample from GPT-2: type a prompt, get ``nsamples`` continuations (streamed).

    interactive_conditional_samples --model_name 124M --top_k 40
    echo "The dog" | python scripts/interactive_conditional_samples.py --seed 1 --backend tf
"""
import sys

if __name__ == "__main__":  # python scripts/<name>.py: this checkout's src/ first (see _checkout.py)
    import _checkout  # noqa: F401

from gpt2_common import cli  # noqa: E402


def interact_model(model_name=cli.DEFAULT_MODEL, *, seed=None, nsamples=1, batch_size=1, length=None,
                   temperature=1, top_k=0, top_p=1, models_dir='models', backend='torch',
                   device=None, model_dir=None, stop_at_endoftext=False, top_p_mode='original',
                   download=True, dtype='float32'):
    """Interactively run the model: read prompts (from a terminal or a pipe) and print samples.

    For each prompt, prints nsamples samples, each after a line "=== SAMPLE N ===", and a line of
    80 "=" after the last. The first sample of each batch is streamed as it is generated. Ends at
    end of input (status 0) or Ctrl-C (130). A prompt too long for the context is reported and
    re-asked at a terminal; with piped input it ends the run with status 2.

    Args:
        model_name: Which model to use: 124M, 355M, 774M, 1558M (folder in models_dir; a missing
            released model is downloaded unless --nodownload), or another folder in models_dir.
        seed: Integer seed; the same seed gives the same text on both backends and any batch_size.
        nsamples: Number of samples to return per prompt.
        batch_size: Samples generated at once (only affects speed/memory); need not divide nsamples.
        length: Number of tokens per sample; None (default) is half the model's context (n_ctx // 2).
        temperature: Float >= 0 controlling randomness in the Boltzmann distribution; lower is
            less random, 0 is greedy (always the most likely token).
        top_k: Integer; sample from the k most likely tokens only (40 is a good value); 0 = no limit.
        top_p: Nucleus sampling: keep the most likely tokens up to cumulative probability top_p,
            in (0, 1]; 1 = off.
        models_dir: Path to the parent folder containing model subfolders.
        backend: "torch" (default) or "tf".
        device: cpu, cuda or cuda:N (default: the GPU if there is one).
        model_dir: Path of a model folder, used instead of models_dir/model_name.
        stop_at_endoftext: End each sample at its first <|endoftext|> token.
        top_p_mode: "original" (the gpt-2 rule) or "holtzman" (smallest set reaching top_p).
        download: Download a missing released model (--nodownload: just report it).
        dtype: Compute dtype: float32 (default), bfloat16 or float16.
    """
    flags = cli.check_sampling_flags(
        backend=backend, device=device, seed=seed, nsamples=nsamples, batch_size=batch_size,
        length=length, temperature=temperature, top_k=top_k, top_p=top_p, top_p_mode=top_p_mode,
        stop_at_endoftext=stop_at_endoftext, download=download, dtype=dtype, min_nsamples=1)
    ready = cli.prepare_model(flags, model_name=model_name, models_dir=models_dir,
                              model_dir=model_dir, unconditional=False)
    model = ready.load()
    enc, n_ctx = ready.encoder, ready.hparams.n_ctx
    base = cli.random_base_seed() if flags.seed is None else flags.seed
    cli.setup_text_streams()
    at_terminal = cli.isatty(sys.stdin)
    prompt_index = 0
    for raw_text in cli.read_prompts():
        context_tokens = enc.encode(raw_text)
        if not cli.fits_context(len(context_tokens), ready.length, n_ctx):
            message = (f"prompt of {len(context_tokens)} tokens + length {ready.length} does not "
                       f"fit the model's context of {n_ctx} tokens")
            if not at_terminal:
                raise cli.UsageError(message)
            print(f"error: {message}; try a shorter prompt", file=sys.stderr, flush=True)
            continue
        cli.print_samples(
            model, enc, context_tokens, nsamples=flags.nsamples, batch_size=flags.batch_size,
            length=ready.length, seeds=lambda first, n, p=prompt_index: cli.sample_seeds(base, p, first, n),
            **flags.sampling_kwargs())
        print("=" * 80, flush=True)
        prompt_index += 1


def main():
    """Console-script entry point."""
    cli.run(interact_model, name="interactive_conditional_samples")


if __name__ == "__main__":
    main()
