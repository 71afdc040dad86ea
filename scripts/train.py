#!/usr/bin/env python3
"""Fine-tune GPT-2, or train one from scratch, on either backend (the same run, the same weights).

    gpt2_encode corpus/ data/corpus.bin --val_fraction 0.05
    gpt2_train --dataset data/corpus.bin --model_name 124M --run_name run1 --steps 1000
    gpt2_train --dataset data/corpus.bin --run_name small --n_layer 4 --n_embd 256 --n_head 4 --n_ctx 256 \
        --vocab_dir models/124M --learning_rate 1e-3 --warmup_steps 50 --lr_schedule cosine
    interactive_conditional_samples --model_dir checkpoint/run1
"""
import dataclasses
import os
import sys

if __name__ == "__main__":  # python scripts/<name>.py: this checkout's src/ first (see _checkout.py)
    import _checkout  # noqa: F401

from gpt2_common import cli  # noqa: E402


def train(dataset=None, *, model_name=cli.DEFAULT_MODEL, models_dir='models', model_dir=None, run_name='run1',
          checkpoint_dir='checkpoint', steps=1000, batch_size=1, learning_rate=1e-4, accumulate_gradients=1,
          optimizer='adam', restore_from='latest', sample_every=100, sample_length=64, sample_num=1,
          save_every=1000, val_every=100, val_batch_count=8, val_dataset=None, val_fraction=0.0,
          memory_saving_gradients=False, only_train_transformer_layers=False, backend='torch', device=None,
          dtype='float32', dropout=0.0, seed=0, warmup_steps=0, lr_schedule='constant', weight_decay=None, grad_clip=1.0,
          context=None, n_layer=None, n_embd=None, n_head=None, n_ctx=None, n_vocab=None, vocab_dir=None, keep=3,
          plot=None, download=True, progress=True, stop_after=0, fsdp=False):
    """Train GPT-2 on a dataset; checkpoint/<run_name>/ becomes a model folder in the original layout.

    The run resumes where it stopped (weights, optimizer state, step, data position) unless
    --restore_from says otherwise. Ctrl-C saves the completed steps and exits with status 130.

    Args:
        dataset: Training data: a token file (.bin from gpt2_encode), nshepperd's .npz, or text
            (a file, folder, glob or .jsonl; encoded on the fly).
        model_name: Model to start from (a folder in models_dir); see also model_dir.
        models_dir: Parent folder of model folders.
        model_dir: A model folder given directly.
        run_name: Name of the run folder in checkpoint_dir.
        checkpoint_dir: Where run folders live.
        steps: Total optimizer steps (a resumed run trains up to this number).
        batch_size: Sequences per micro-batch.
        learning_rate: Peak learning rate.
        accumulate_gradients: Micro-batches per optimizer step.
        optimizer: adam, adamw or sgd (one update rule, the same on both backends).
        restore_from: latest (the run's latest save, else the model), fresh (the model, discarding
            the run's saves), or a path to a model or run folder.
        sample_every: Print and save samples every N steps (0: never).
        sample_length: Tokens per sample.
        sample_num: Samples each time.
        save_every: Save every N steps (0: only at the end).
        val_every: Validation loss every N steps (0: never).
        val_batch_count: Batches in each validation.
        val_dataset: Validation data (same formats as dataset). Without it: --val_fraction, or the
            X.val.bin that gpt2_encode --val_fraction wrote beside X.bin.
        val_fraction: Hold out this fraction of the dataset's documents for validation.
        memory_saving_gradients: Recompute activations in the backward pass (gradient checkpointing).
        only_train_transformer_layers: Train the blocks only (not embeddings nor the final LayerNorm).
        backend: torch or tf.
        device: cpu, cuda or cuda:N (default: the GPU if there is one).
        dtype: float32, or bfloat16: mixed precision (matrix products and activations in bfloat16;
            weights, optimizer state, LayerNorm, attention softmax and the loss in float32).
        dropout: Dropout probability on the embeddings, the attention probabilities and each block's
            two outputs (Hugging Face's embd/attn/resid_pdrop); 0 (default) as the released model.
            Its masks are seeded by --seed and resume exactly.
        seed: Seed of the data order, the split, fresh weights and the samples.
        warmup_steps: Linear learning-rate warm-up steps.
        lr_schedule: constant or cosine (to 10% of the peak at the last step).
        weight_decay: Weight decay of the block matrices (default 0.1 for adamw, else 0).
        grad_clip: Clip the global gradient norm to this (0: off).
        context: Tokens the model reads per sequence (default: n_ctx).
        n_layer: Train from scratch with this many layers (n_embd, n_head, n_ctx likewise; the
            others default to 124M's).
        n_embd: Width, from scratch.
        n_head: Attention heads, from scratch.
        n_ctx: Context length, from scratch.
        n_vocab: Vocabulary size, from scratch (default 50257): a smaller one keeps the token ids
            0..n_vocab-1 only, for toy tasks on a few ids (needs --sample_every 0).
        vocab_dir: Folder with encoder.json and vocab.bpe (default: the model folder).
        keep: Keep the last N saves (0: all).
        plot: Write a PNG of the loss curves here at the end.
        download: Download a missing released model.
        progress: Show the progress bar.
        stop_after: Train at most this many steps now, save and exit (the schedule still spans
            --steps; run again to go on). For time-limited jobs.
        fsdp: Under torchrun: shard parameters, gradients and optimizer state across the ranks
            (FSDP2 fully_shard) instead of replicating them (DDP). Needs --sample_every 0.
    """
    from gpt2_common.constants import EOT_TOKEN
    from gpt2_common.encoder import load_encoder
    from gpt2_common.train import session as S
    from gpt2_common.train.loop import Interrupted, LoopConfig, train_loop
    from gpt2_common.train.optim import TRAINING_DTYPES
    from gpt2_common.train.run import RunFolder, plot_metrics
    from gpt2_common.train.distributed import PeerLost, detect
    from gpt2_common.weights import expected_shapes
    import numpy as np

    # ---- flags (nothing is read or written before they are all checked) ----
    optim = S.check_optim(optimizer, learning_rate, steps, warmup_steps, lr_schedule, weight_decay, grad_clip)
    cli.check_backend(backend)
    device = cli.check_device(device)
    if dtype not in TRAINING_DTYPES:
        raise cli.UsageError(f"--dtype {dtype!r}: training runs in {' or '.join(TRAINING_DTYPES)} "
                             "(float16 would need loss scaling, which the trainer does not do)")
    loop = LoopConfig(
        steps=optim.steps, accumulate=cli.check_int("accumulate_gradients", accumulate_gradients, 1),
        val_every=cli.check_int("val_every", val_every, 0), val_batch_count=cli.check_int("val_batch_count", val_batch_count, 0),
        sample_every=cli.check_int("sample_every", sample_every, 0), sample_length=cli.check_int("sample_length", sample_length, 1),
        sample_num=cli.check_int("sample_num", sample_num, 1), save_every=cli.check_int("save_every", save_every, 0),
        keep=cli.check_int("keep", keep, 0), seed=cli.check_int("seed", seed, 0),
        stop_after=cli.check_int("stop_after", stop_after, 0),
        progress=cli.check_flag("progress", progress) and cli.isatty(sys.stderr))
    batch_size = cli.check_int("batch_size", batch_size, 1)
    dropout = cli.check_number("dropout", dropout, 0.0, 1.0)
    if dropout >= 1.0:
        raise cli.UsageError(f"--dropout must be below 1, got {dropout}")
    val_fraction = cli.check_number("val_fraction", val_fraction, 0.0, 1.0)
    cli.check_int("context", context, 1, allow_none=True)
    for name, flag in (("memory_saving_gradients", memory_saving_gradients), ("download", download),
                       ("only_train_transformer_layers", only_train_transformer_layers)):
        cli.check_flag(name, flag)
    if not isinstance(run_name, str) or not run_name:
        raise cli.UsageError(f"--run_name must be a name, got {run_name!r}")
    cli.check_model_name(run_name, what="run name", example="run1", path_flag="--checkpoint_dir for another parent folder")
    run = RunFolder(os.path.join(os.path.expanduser(str(checkpoint_dir)), run_name))
    run.check_writable()  # a file in the way, or no permission: before anything is loaded
    world = detect(backend)  # torchrun's or TF_CONFIG's ranks; alone without a launcher
    loop = dataclasses.replace(loop, world=world)
    if cli.check_flag("fsdp", fsdp) and (backend != 'torch' or world.size < 2):
        raise cli.UsageError("--fsdp shards a torch model across the ranks of torchrun: "
                             "run it under torchrun with --backend torch")
    if fsdp and loop.sample_every:
        raise cli.UsageError("--fsdp: rank 0 cannot sample from a sharded model: give --sample_every 0 "
                             "(and sample from the run folder afterwards)")

    # ---- where the weights start, and the data ----
    base_dir, base_name = cli.resolve_model_dir(model_name, models_dir, model_dir)
    scratch = S.scratch_hparams(n_layer, n_embd, n_head, n_ctx, n_vocab)
    start = S.settle_start(run, restore_from, base_dir, base_name, scratch, vocab_dir, loop.seed, download)
    try:
        hp = start.hparams
        context = hp.n_ctx if context is None else context
        if context > hp.n_ctx:
            raise cli.UsageError(f"--context {context} is longer than the model's n_ctx {hp.n_ctx}")
        if loop.sample_every and hp.n_vocab <= EOT_TOKEN:
            raise cli.UsageError(f"a vocabulary of {hp.n_vocab} tokens has no <|endoftext|> to start samples "
                                 "from: give --sample_every 0")
        if loop.sample_every and loop.sample_length > hp.n_ctx:
            raise cli.UsageError(f"--sample_length {loop.sample_length} is longer than the model's n_ctx {hp.n_ctx}")
        encoder = load_encoder(start.vocab_dir)
        train_data, val_data = S.load_data(dataset, val_dataset, val_fraction, encoder, context, batch_size,
                                           loop.seed, loop.val_batch_count,
                                           hp.n_vocab if hp.n_vocab <= EOT_TOKEN else None)  # a toy vocabulary: check ids

        # ---- model and trainer (data-parallel: join the other ranks first) ----
        from gpt2_common import load_model

        distributed = {}
        if world.size > 1 and backend == 'torch':
            from gpt2_torch import distributed as D
            device = D.init(world, device)
            distributed["fsdp"] = fsdp
        elif world.size > 1:
            from gpt2_tf import distributed as D
            distributed["strategy"] = D.init(world)
        model = load_model(backend, start.model_dir, device=device, trainable=True)
        trainer = S.make_trainer(model, optim, only_train_transformer_layers, memory_saving_gradients,
                                 world, loop.accumulate, dtype, dropout, loop.seed, **distributed)
        if start.state is not None:
            trainer.load_optimizer_state(start.state["optimizer"])
            trainer.load_rng_state(start.state["rng"])
    finally:
        S.cleanup(start)
    prepared = []

    def prepare():
        if not prepared:
            if start.fresh_run and run.exists():
                run.remove_all_saves()
            run.prepare(hp, start.vocab_dir)
            prepared.append(True)

    def sample(step):
        rows = model.generate(None, loop.sample_length, batch_size=loop.sample_num, top_k=40,
                              seed=[loop.seed * 1000003 + step * 101 + i for i in range(loop.sample_num)])
        return [encoder.decode(r) for r in rows]

    what = f"resuming {run.path} at step {start.step}" if start.state is not None else \
        f"training {run.path} from {'fresh weights' if start.temporary else start.model_dir}"
    ranks = f", {world.size} ranks ({world.launcher})" if world.size > 1 else ""
    print(f"{what}: {backend}{ranks}, {sum(int(np.prod(s)) for s in expected_shapes(hp).values()):,} parameters, "
          f"{len(train_data.tokens):,} training tokens, context {context}, batch {batch_size} x {loop.accumulate}",
          file=sys.stderr, flush=True) if world.main else None
    try:
        out = train_loop(trainer, optim, loop, train_data, val_data, run, start.step,
                         (start.state or {}).get("record") if start.state else None, sample, prepare)
    except Interrupted as e:
        print(f"saved {run.path} at step {e.step}", file=sys.stderr)
        raise KeyboardInterrupt from None
    except PeerLost as e:
        print(e, file=sys.stderr, flush=True)
        os._exit(1)  # not sys.exit: the framework's exit handlers may wait on the lost rank
    except FloatingPointError as e:
        raise cli.UsageError(str(e)) from None
    except Exception as e:
        if S.is_out_of_memory(e):
            raise cli.UsageError(S.OOM_HINT) from None
        raise
    if world.size > 1 and backend == 'torch':
        D.shutdown()
    if not world.main:
        return
    if plot:
        plot_metrics(out["records"], str(plot), title=run.path)
    val = f", val loss {out['val_loss']:.4f}" if out.get("val_loss") is not None else ""
    loss = f", loss {out['loss']:.4f}" if "loss" in out else ""
    print(f"{run.path}: step {out['step']}{loss}{val}")


def main():
    """Console-script entry point."""
    cli.run(train, name="gpt2_train")


if __name__ == "__main__":
    main()
