"""The training loop: one script for the CPU, one GPU or N GPUs (torchrun), resumable onto the same curve.

Every random draw of step s (diffusion noise, timesteps, dropout) is seeded from (seed, s, rank), and the data
order is a pure function of (seed, epoch), so a run resumed from a checkpoint at step k draws exactly what an
uninterrupted run draws from step k+1 on. A checkpoint thus needs weights, EMA, optimizer, LR schedule, step
and the partial log, nothing else. Validation samples chunks with the EMA weights, as evaluation does, and
reports the action MSE both in model units and in LIBERO's raw action units.
"""

from __future__ import annotations

import copy
import csv
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from libero_dp import checkpoint
from libero_dp.config import TrainParams
from libero_dp.dataformat import OBS_IMAGE_KEYS
from libero_dp.distributed import StreamSampler, seed_worker, setup, step_seed
from libero_dp.fileio import atomic_path, write_json
from libero_dp.language import language_table, token_dim
from libero_dp.policy import DiffusionPolicy, count_params
from libero_dp.rdt import RDTPolicy
from libero_dp.sampling import diffusion_loss, inference_scheduler, sample, train_scheduler
from libero_dp.statevec import libero_slots
from libero_dp.tracking import stage_run
from libero_dp.units import Transform
from libero_dp.windows import WindowDataset

LOG_COLUMNS = ("step", "loss", "lr", "val_mse", "samples_per_s")
RAW_ACTION_NAMES = ("x", "y", "z", "rx", "ry", "rz", "gripper")
#: Params that change logging, speed or placement but not what is learned: a run may resume across them.
OPERATIONAL = frozenset(
    {"val_every", "ckpt_every", "log_every", "num_workers", "device", "compile", "out_dir"}
)
VAL_MAX_WINDOWS = 1024  # validation samples full chunks; an evenly spaced subset keeps it a small cost
VAL_SAMPLING_STEPS = 5


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """LR factor for optimizer step s (0-based): linear warmup to 1, then cosine decay to 0 at `total`."""

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        progress = (s - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """EMA with diffusers' warmup, min(decay, (1+s)/(10+s)), so the init does not dominate early weights."""
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - d)
    for e, m in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(m)


def _to_device(
    batch: dict[str, torch.Tensor],
    device: torch.device,
    lang: tuple[torch.Tensor, torch.Tensor],
    model: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """On the device, with the task's language tokens; for the rdt policy, actions in the 128-d state vector
    with the loss restricted to the slots LIBERO fills (the others are masked out at inference)."""
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    out["lang"], out["lang_mask"] = lang[0][out["task_id"]], lang[1][out["task_id"]]
    if isinstance(model, RDTPolicy):
        out["actions"] = model.statevec.lift(out["actions"])
        out["dim_weight"] = model.slot_mask
    return out


def data_actions(model: torch.nn.Module, chunk: torch.Tensor) -> torch.Tensor:
    """Sampled chunks -> the scale stage's model units (the rdt policy samples 128-d state vectors)."""
    return model.to_data(chunk) if isinstance(model, RDTPolicy) else chunk


def policy_config(params: TrainParams, ds: WindowDataset) -> Any:
    """The policy's config from its kind and size (params) and the data's dims."""
    dims: dict[str, Any] = dict(horizon=ds.horizon, num_cameras=ds.num_cameras)
    if params.policy == "dp":
        if params.siglip_path or params.t5_path:
            raise ValueError("train.siglip_path / train.t5_path: RDT's encoders need train.policy=rdt")
        dims.update(action_dim=ds.action_dim, proprio_dim=ds.proprio_dim, image_history=ds.image_history)
        return checkpoint.make_config("dp", params.preset, **dims)
    if params.preset == "small":
        raise ValueError("train.preset=small is a dp size; the rdt policy has tiny, rdt170m and rdt1b")
    transform = Transform.load(ds.transform_path)
    slots = libero_slots(transform.action_names, "actions")
    if libero_slots(transform.proprio_names, "proprio") != slots:
        raise ValueError(f"{ds.transform_path}: proprio and actions fill different RDT slots")
    dims.update(img_history=ds.image_history, slots=slots, lang_dim=token_dim(params.t5_path))
    if params.siglip_path:
        dims.update(vision="siglip", siglip_path=params.siglip_path)
    return checkpoint.make_config("rdt", params.preset, **dims)


@torch.no_grad()
def validate(
    model: DiffusionPolicy | RDTPolicy,
    loader: DataLoader,
    lang: tuple[torch.Tensor, torch.Tensor],
    transform: Transform,
    prediction_type: str,
    num_train_timesteps: int,
    seed: int,
    autocast: Any,
) -> dict[str, Any]:
    """Per-dimension MSE of sampled chunks against the demo's, over valid steps; the same noise every call."""
    device = next(model.parameters()).device
    scheduler = inference_scheduler(prediction_type, num_train_timesteps)
    generator = torch.Generator().manual_seed(seed)
    sq_model = sq_raw = 0.0
    count = 0
    for batch in loader:
        b = _to_device(batch, device, lang)  # actions stay in data units here: they are only compared
        with autocast:
            obs = model.encode_obs(b["proprio"], b["images"], b["lang"], b["lang_mask"])
            pred = sample(model, obs, scheduler, VAL_SAMPLING_STEPS, generator)
            pred = data_actions(model, pred).float().cpu().numpy()
        gt, valid = batch["actions"].numpy(), batch["mask"].numpy()
        sq_model = sq_model + ((pred - gt) ** 2)[valid].sum(0)
        raw_err = transform.actions_from_model(pred) - transform.actions_from_model(gt)
        sq_raw = sq_raw + (raw_err**2)[valid].sum(0)
        count += int(valid.sum())
    per_dim = np.asarray(sq_raw) / max(count, 1)
    return {
        "val_mse": float(per_dim.mean()),
        "val_mse_model": float(np.mean(np.asarray(sq_model) / max(count, 1))),
        "val_mse_dim": dict(zip(RAW_ACTION_NAMES, per_dim.tolist(), strict=True)),
    }


def _write_log(path: Path, rows: dict[int, dict]) -> None:
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_COLUMNS, restval="")
        w.writeheader()
        w.writerows(rows[s] for s in sorted(rows))


def _save_checkpoint(
    out_dir: Path, model: torch.nn.Module, ema: torch.nn.Module, state: dict, config: dict
) -> None:
    """train_state.pt alone is enough to resume; the safetensors and config.json are the policy for inference.

    Each file is replaced atomically; train_state.pt carries its own copy of the weights, so a crash between
    two files can never pair weights of one step with an optimizer of another.
    """
    with atomic_path(out_dir / "train_state.pt", ".pt") as tmp:
        torch.save({**state, "model": model.state_dict(), "ema": ema.state_dict()}, tmp)
    for name, m in (("model", model), ("ema", ema)):
        tensors = {k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()}
        with atomic_path(out_dir / f"{name}.safetensors", ".safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"step": str(state["step"])})
    write_json(out_dir / "config.json", {**config, "step": state["step"]})


def _dataset_info(windows_dir: Path, train_ds: WindowDataset, val_ds: WindowDataset | None) -> dict[str, Any]:
    return {
        "windows_dir": str(windows_dir),
        "train_windows": len(train_ds),
        "val_windows": len(val_ds) if val_ds is not None else 0,
        "action_dim": train_ds.action_dim,
        "proprio_dim": train_ds.proprio_dim,
        "horizon": train_ds.horizon,
        "image_history": train_ds.image_history,
        "image_size": train_ds.image_size,
        "num_cameras": train_ds.num_cameras,
        "cameras": list(OBS_IMAGE_KEYS),
        "languages": train_ds.languages,
        "transform_path": str(train_ds.transform_path),
    }


def _optimizer(model: torch.nn.Module, params: TrainParams) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and conv kernels only, not on biases and norm gains.

    Fused (one kernel for all tensors, on the CPU too): the per-tensor loop costs ~5% of a tiny CPU step.
    """
    groups = [
        {"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": params.weight_decay},
        {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=params.lr, fused=True)


def train(params: TrainParams, windows_dir: Path, out_dir: Path) -> dict:
    """Train, or resume training, a policy on the windows in `windows_dir`; returns the final metrics.

    Writes out_dir/{model,ema}.safetensors, config.json, language.safetensors and train_state.pt, and
    out_dir/../metrics/{train_log.csv,train.json}. A train_state.pt made with the same params (save
    OPERATIONAL ones) and data is resumed from; any other is overwritten. Under torchrun, rank 0 alone
    validates and writes, and the other ranks return {}.
    """
    windows_dir, out_dir = Path(windows_dir), Path(out_dir)
    metrics_dir = out_dir.parent / "metrics"
    dd, device = setup(params.device)
    cuda = device.type == "cuda"
    if params.batch_size % dd.world:
        raise ValueError(f"train.batch_size {params.batch_size} is not divisible by {dd.world} ranks")
    per_rank = params.batch_size // dd.world

    train_ds = WindowDataset(windows_dir, "train")
    try:
        val_ds = WindowDataset(windows_dir, "val")
    except FileNotFoundError:  # scale.val_fraction = 0: nothing held out
        val_ds = None
    cfg = policy_config(params, train_ds)
    dataset = _dataset_info(windows_dir, train_ds, val_ds)
    config = {
        "kind": params.policy,
        "policy": cfg.to_dict(),
        "train": params.model_dump(),
        "dataset": dataset,
    }
    fingerprint = {
        "policy": cfg.to_dict(),
        "dataset": dataset,
        "train": {k: v for k, v in params.model_dump().items() if k not in OPERATIONAL},
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    emb, mask = language_table(
        train_ds.languages, out_dir / "language.safetensors" if dd.main else None, params.t5_path
    )
    lang = (torch.from_numpy(emb).to(device), torch.from_numpy(mask).to(device))
    transform = Transform.load(train_ds.transform_path)

    torch.manual_seed(params.seed)
    model = DiffusionPolicy(cfg) if params.policy == "dp" else RDTPolicy(cfg)
    init_info = {"file": None}
    if params.init_from:
        init_info = checkpoint.init_from(model, params.init_from, params.init_weights)
        if dd.main:
            loaded = init_info["file"] or "no weights file there, training from scratch"
            print(f"train.init_from={params.init_from}: {loaded}")
    model = model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt = _optimizer(model, params)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(params.warmup_steps, params.steps))
    start, rows, accum = 0, {}, {"loss": 0.0, "loss_padded": 0.0, "n": 0}
    state_path = out_dir / "train_state.pt"
    if state_path.exists():
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
        if saved["fingerprint"] == fingerprint:
            model.load_state_dict(saved["model"])
            ema.load_state_dict(saved["ema"])
            opt.load_state_dict(saved["optimizer"])
            lr_sched.load_state_dict(saved["lr_scheduler"])
            start, rows, accum = saved["step"], saved["log"], saved["accum"]
            if dd.main:
                print(f"{state_path}: resuming at step {start}")
        elif dd.main:
            print(f"{state_path}: made with other params or data; training from scratch")
    if start > params.steps:
        raise ValueError(f"{state_path} is at step {start}, past train.steps={params.steps}")

    net: torch.nn.Module = model
    if dd.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dd.local_rank] if cuda else None)
    if params.compile:
        net = torch.compile(net)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and params.bf16 else nullcontext()
    noise_sched = train_scheduler(params.prediction_type, params.num_train_timesteps)
    loader = DataLoader(
        train_ds,
        batch_sampler=StreamSampler(len(train_ds), per_rank, params.seed, dd.rank, dd.world, start),
        num_workers=params.num_workers,
        pin_memory=cuda,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(params.seed),
    )
    val_loader = None
    if val_ds is not None and dd.main:
        n_val = min(len(val_ds), VAL_MAX_WINDOWS)
        keep = np.unique(np.linspace(0, len(val_ds) - 1, n_val).round().astype(int)).tolist()
        val_loader = DataLoader(Subset(val_ds, keep), batch_size=per_rank, num_workers=params.num_workers)

    def run_validation(run: Any, step: int) -> dict[str, Any]:
        val = validate(
            ema,
            val_loader,
            lang,
            transform,
            params.prediction_type,
            params.num_train_timesteps,
            params.seed,
            autocast,
        )
        rows.setdefault(step, {"step": step})["val_mse"] = val["val_mse"]
        run.log_metrics(val, step=step)
        tqdm.write(f"step {step}: val_mse {val['val_mse']:.5f} raw, {val['val_mse_model']:.5f} model units")
        return val

    val: dict[str, Any] = {}
    train_time, trained = 0.0, 0
    stage_t0 = time.perf_counter()
    with stage_run("train", config) if dd.main else nullcontext() as run:
        if dd.main:
            run.log_metrics({"params": count_params(model)})
        bar = tqdm(total=params.steps, initial=start, disable=not dd.main, desc="train", dynamic_ncols=True)
        batches = iter(loader)
        tick, interval_steps = time.perf_counter(), 0
        for step in range(start + 1, params.steps + 1):
            batch = _to_device(next(batches), device, lang, model)
            seed = step_seed(params.seed, step, dd.rank)
            torch.manual_seed(seed)  # dropout
            with autocast:
                loss, info = diffusion_loss(
                    net, batch, noise_sched, params.prediction_type, torch.Generator().manual_seed(seed)
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if params.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
            lr = opt.param_groups[0]["lr"]
            opt.step()
            lr_sched.step()
            ema_update(ema, model, params.ema_decay, step)
            accum = {
                "loss": accum["loss"] + info["loss"],
                "n": accum["n"] + 1,
                "loss_padded": accum["loss_padded"] + info["loss_padded"],
            }
            interval_steps += 1
            bar.update()

            if step % params.log_every == 0 or step == params.steps:
                means = (
                    torch.stack(
                        [
                            torch.as_tensor(accum[k], device=device, dtype=torch.float32)
                            for k in ("loss", "loss_padded")
                        ]
                    )
                    / accum["n"]
                )
                if dd.world > 1:
                    dist.all_reduce(means, op=dist.ReduceOp.AVG)
                elapsed = time.perf_counter() - tick
                train_time, trained = train_time + elapsed, trained + interval_steps
                metrics = {
                    "loss": means[0].item(),
                    "loss_padded": means[1].item(),
                    "lr": lr,
                    "samples_per_s": interval_steps * params.batch_size / elapsed,
                }
                accum = {"loss": 0.0, "loss_padded": 0.0, "n": 0}
                if dd.main:
                    rows.setdefault(step, {"step": step}).update(
                        {k: metrics[k] for k in ("loss", "lr", "samples_per_s")}
                    )
                    run.log_metrics(metrics, step=step)
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{lr:.2e}")
                    tqdm.write(
                        f"step {step}: loss {metrics['loss']:.5f} lr {lr:.2e} "
                        f"{metrics['samples_per_s']:.1f} samples/s"
                    )
                tick, interval_steps = time.perf_counter(), 0
            pause = time.perf_counter()  # validation and checkpoints do not count against samples/s
            if val_loader is not None and (step % params.val_every == 0 or step == params.steps):
                val = run_validation(run, step)
            if step % params.ckpt_every == 0 or step == params.steps:
                if dd.main:
                    state = {
                        "step": step,
                        "log": rows,
                        "fingerprint": fingerprint,
                        "optimizer": opt.state_dict(),
                        "lr_scheduler": lr_sched.state_dict(),
                        "accum": {k: float(v) for k, v in accum.items()},
                    }
                    _save_checkpoint(out_dir, model, ema, state, config)
                    _write_log(metrics_dir / "train_log.csv", rows)
                dd.barrier()
            tick += time.perf_counter() - pause
        bar.close()

        final: dict[str, Any] = {}
        if dd.main:
            if val_loader is not None and not val:
                val = run_validation(run, params.steps)  # resumed a finished run: no step ran to validate
            logged = [s for s in rows if rows[s].get("loss", "") != ""]
            final = {
                "steps": params.steps,
                "loss": rows[max(logged)]["loss"] if logged else None,
                **val,
                "params": count_params(model),
                "policy": params.policy,
                "init_from": init_info["file"],
                "device": str(device),
                "world_size": dd.world,
                "samples_per_s": trained * params.batch_size / train_time if train_time else None,
                # this invocation's wall time (a resumed run counts only its own part)
                "stage_wall_s": round(time.perf_counter() - stage_t0, 1),
            }
            _write_log(metrics_dir / "train_log.csv", rows)
            write_json(metrics_dir / "train.json", final)
            run.log_metrics({f"final_{k}": v for k, v in final.items()})
    if dd.world > 1:
        dist.destroy_process_group()
    return final
