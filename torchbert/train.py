"""Pretrain BERT with PyTorch: `python -m torchbert.train` (single process, CPU or GPU) or
`torchrun --nproc-per-node K -m torchbert.train ...` (DistributedDataParallel).

The command line and the run's set-up; nothing imports this module. The loop is
bertcore.train.loop's `train_loop`, shared with jaxbert: this file fills its hooks (`TorchTwin`):
one step (step.py: forward, loss, backward, clip, AdamW), the metrics all-reduce, evaluation and
checkpoints. The optimizer is optim.py's, the ranks parallel.py's, the device and process
settings runtime.py's, the checkpoints checkpoint.py's. Everything that is not PyTorch
(configs, data, RUNDIR, metrics, plots, the loop) is bertcore's.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
import torch.distributed as dist

from bertcore.data.batches import step_seed
from bertcore.infra.errors import cli_entry
from bertcore.train.cli import resolve_dtype, resolve_pad_vocab, train_parser
from bertcore.train.loop import Result, Twin, train_loop
from bertcore.train.init_from import fresh_note
from bertcore.train.run import Run
from bertcore.train.setup import setup_run
from bertcore.train.rundir import trained_model_config
from bertcore.train.stopping import Stopper, run_train

from . import parallel       # parallel.global_metrics: the loop's one host sync, counted by tests
from .checkpoint import Checkpointer
from .arch import pretraining_model
from .optim import make_optimizer
from .parallel import init_distributed, wrap_ddp
from .pretrained import pretraining_weights
from .runtime import configure_process, peak_device_memory_mb, pick_device
from .step import evaluate, to_device, train_step


def parse_args(argv: list[str] | None = None):
    p = train_parser("python -m torchbert.train",
                     "Pretrain BERT (MLM + optional NSP) with PyTorch on CPU, GPU or torchrun.")
    g = p.add_argument_group("torch")
    g.add_argument("--device", default="auto",
                   help="auto (cuda if available, else cpu) | cpu | cuda | cuda:N")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (opt-in)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


class TorchTwin(Twin):
    """What bertcore.train.loop.train_loop asks of PyTorch: the step, the metrics all-reduce, eval
    and checkpoints. The loop itself (cadence, stopping, logging, the end of a run) is
    bertcore's."""

    def __init__(self, net, model, optimizer, ckpt: Checkpointer, cfg, device, dtype: str,
                 rank: int, world: int, extra: dict[str, Any]):
        self.net, self.model, self.optimizer, self.ckpt = net, model, optimizer, ckpt
        self.cfg, self.device, self.dtype, self.extra = cfg, device, dtype, extra
        self.rank, self.world = rank, world
        self.prog = (f"torchrun --nproc-per-node {world} -m torchbert.train" if world > 1
                     else "python -m torchbert.train")
        # model + AdamW's two moments, fp32
        self.checkpoint_bytes = 3 * sum(p.numel() * p.element_size() for p in model.parameters())

    def put_batch(self, batch):
        return to_device(batch, self.device)   # pinned memory, a non-blocking copy on a GPU

    def step(self, step, batch, lr):
        # torch keeps no dropout key: its generator is reseeded from (seed, step, rank) every
        # step, the mirror of jaxbert's fold_in of the step into its dropout key.
        torch.manual_seed(step_seed(self.cfg.seed, step, self.rank))
        return train_step(self.net, self.optimizer, batch, lr, self.cfg, self.device, self.world,
                          self.dtype)

    def host_metrics(self, metrics, want_stop):
        if self.world > 1:
            # Each rank's stop flag rides in the metrics all-reduce: the sum counts the ranks
            # that want to stop, and every rank reads it (no collective of its own).
            metrics["stop_requests"] = torch.tensor(float(want_stop), device=self.device)
        row = parallel.global_metrics(metrics, self.world)
        return row, (row.pop("stop_requests") > 0 if self.world > 1 else want_stop)

    def evaluate(self, batches):
        return evaluate(self.model, batches, self.cfg, self.device, self.dtype)

    def save(self, step, extra):
        # No RNG state to save: dropout is reseeded from (seed, step, rank) every step.
        if self.rank == 0:
            self.ckpt.save(step, self.model, self.optimizer, extra)

    def weights(self):
        return {k: v.detach().cpu().numpy() for k, v in self.model.hf_state_dict().items()}

    def summary(self):
        return {"parameters": self.model.num_parameters(), **self.extra,
                "peak_device_memory_mb": peak_device_memory_mb(self.device),
                "torch_version": torch.__version__}


def train(args, argv: list[str], stopper: Stopper) -> Result:
    device = pick_device(args.device)
    rank, world = init_distributed(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    # Rank 0 builds the tokenizer, the shards and RUNDIR first; the others then find them.
    if rank != 0:
        dist.barrier()
    run: Run = setup_run(args, "torch", is_main=rank == 0)
    if rank == 0 and world > 1:
        dist.barrier()
    cfg, mcfg = run.train_config, run.model_config
    cfg.check_rows_divide(world, "processes")
    mcfg = trained_model_config(mcfg, cfg)

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    pad_vocab = resolve_pad_vocab(args.pad_vocab, accelerator=device.type == "cuda")
    model = pretraining_model(mcfg, pad_vocab_to=pad_vocab)
    if run.init_source is not None:
        fresh = model.load_hf_state_dict(pretraining_weights(run.init_source),
                                         source=str(run.init_source.path))
        if fresh:
            run.note(fresh_note(run.init_source.path, fresh))
    model = model.to(device)
    if args.remat:
        model.gradient_checkpointing_enable()
    dtype = resolve_dtype(args.dtype, accelerator=device.type == "cuda")
    optimizer = make_optimizer(model, cfg)

    ckpt = Checkpointer(run.rundir, mcfg, keep=cfg.keep_checkpoints)
    resumed = None
    if args.resume:
        resumed = ckpt.restore(model, optimizer)
        run.note(f"resumed from {ckpt.path(resumed['step'])} at step {resumed['step']}")

    net = model
    if args.compile:
        net = torch.compile(net)
    net = wrap_ddp(net, cfg, device, world)
    net.train()
    twin = TorchTwin(net, model, optimizer, ckpt, cfg, device, dtype, rank, world,
                     {"device": str(device), "dtype": dtype, "remat": args.remat,
                      "pad_vocab": pad_vocab, "world_size": world})
    try:
        result = train_loop(run, twin, stopper, resumed=resumed, stop_after=args.stop_after,
                            argv=argv)
    except BaseException:
        if world > 1:
            dist.destroy_process_group()   # no barrier: the other ranks may never reach one
        raise
    if world > 1:
        # Leave together: rank 0 still writes the last checkpoint and the export when the
        # others are done, and a rank that tears its process group down while another still
        # uses it can abort in gloo's C++ teardown. DDP holds the group too: drop it before
        # destroying the group. (No jaxbert mirror: one JAX process drives all its devices,
        # and multi-host shutdown is jax.distributed's.)
        dist.barrier()
        del twin, net
        dist.destroy_process_group()
    return result


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """Exit 0 (done, or --time-budget reached), 75 (stopped by a signal, with a checkpoint),
    74 (a checkpoint could not be written), 130 (a second Ctrl-C), 2 (a usage error)."""
    args = parse_args(argv)
    configure_process(args.threads)   # before torch starts its threads
    return run_train(train, args, argv)


if __name__ == "__main__":
    sys.exit(main())
