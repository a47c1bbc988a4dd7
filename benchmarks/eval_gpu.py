"""Closed-loop evaluation throughput (env steps/s) with N parallel workers, policy and rendering on the GPU.

    python benchmarks/eval_gpu.py --workers 1 8 16 --window 60          # on the GPU machine (EGL on the GPU)
    python benchmarks/eval_gpu.py --workers 1 2 --window 60 --device cpu  # on a CPU machine (EGL on llvmpipe)

Each worker (a spawned process) owns one LIBERO env of the task (libero_dp.sim) and runs episodes from the
official init states, as evaluation does: `reset_to(env, k, init_state_k)`, `--wait` no-op steps, then
`--episode-steps` policy steps. The policy re-plans every `--replan` steps: at each re-plan it reads both
cameras for the current and the previous step (image history 2), rendered with `sim.render_views` only at
those steps (evaluate.episode's on-demand schedule), and runs a forward pass of the project's DiffusionPolicy
(`libero_dp.policy`, random weights, `--preset`) with `--sampling-steps` solver steps (`libero_dp.sampling`),
on `--device`. The executed actions come from the scripted expert (`libero_dp.expert`, pure numpy), so the
arm moves realistically (pushes the drawer closed); the policy's chunk is computed and timed but not executed.
Episodes run to their full length (no early stop at success): the numbers are those of a policy that fails,
the longest episodes of the protocol; `steps_per_episode` lets one rescale.

Throughput is counted over a fixed wall window after all workers are ready and a warm-up has passed; resets,
wait steps, rendering and policy calls inside the window are all part of the wall time.
Results are merged into `--out` (runs with the same machine label and worker count are replaced).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Per-worker counters in one shared array (each worker writes only its own row; no lock needed).
FIELDS = (
    "steps",
    "episodes",
    "renders",
    "render_s",
    "policy_calls",
    "policy_s",
    "resets",
    "reset_s",
    "successes",
)
NF = len(FIELDS)
IDX = {f: i for i, f in enumerate(FIELDS)}


def _thread_env() -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def build_policy(args: argparse.Namespace, device: str) -> tuple[Any, dict[str, Any]]:
    """The project's DiffusionPolicy (random weights) and a `predict(frames, proprio)` closure."""
    import numpy as np
    import torch

    info: dict[str, Any] = {}
    try:
        from libero_dp.policy import DiffusionPolicy, count_params, preset
    except Exception as e:  # pragma: no cover - only where the project's model cannot be imported
        raise RuntimeError(f"libero_dp.policy does not import: {e!r}") from e
    cfg = preset(
        args.preset, action_dim=10, proprio_dim=10, horizon=args.replan, num_cameras=2, image_history=2
    )
    torch.manual_seed(0)
    model = DiffusionPolicy(cfg).to(device).eval()
    torch.nn.init.normal_(model.head.weight, std=0.02)  # the zero-initialised head would make outputs trivial
    info.update(
        model="libero_dp.policy.DiffusionPolicy",
        preset=args.preset,
        params=count_params(model),
        weights="random (no checkpoint: throughput only)",
        sampling_steps=args.sampling_steps,
        config=cfg.to_dict(),
    )
    try:
        from libero_dp.sampling import inference_scheduler, sample

        scheduler = inference_scheduler("sample")
        info["sampler"] = "libero_dp.sampling.sample (diffusers DPMSolverMultistepScheduler, dpmsolver++)"

        def run_sampler(obs: Any, gen: torch.Generator) -> torch.Tensor:
            return sample(model, obs, scheduler, args.sampling_steps, gen)
    except Exception as e:  # diffusers missing: same number of model calls, a plain Euler update
        info["sampler"] = f"stand-in Euler loop with the same {args.sampling_steps} denoise calls ({e!r})"

        @torch.no_grad()
        def run_sampler(obs: Any, gen: torch.Generator) -> torch.Tensor:
            b = obs.state.shape[0]
            x = torch.randn((b, cfg.horizon, cfg.action_dim), generator=gen).to(device)
            ts = torch.linspace(999, 0, args.sampling_steps, device=device).long()
            for i, t in enumerate(ts):
                pred = model.denoise(x, t.expand(b), obs).float()
                x = x + (pred - x) / (args.sampling_steps - i)
            return x

    from libero_dp.language import MAX_TOKENS

    lang = torch.randn(1, MAX_TOKENS, cfg.lang_dim, device=device)  # a fixed instruction embedding stand-in
    lang_mask = torch.zeros(1, MAX_TOKENS, dtype=torch.bool, device=device)
    lang_mask[:, :9] = True
    gen = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def predict(frames: dict[str, np.ndarray], proprio: np.ndarray) -> np.ndarray:
        images = np.stack([frames[c] for c in ("agentview_rgb", "eye_in_hand_rgb")])[
            None
        ]  # (1, 2, K, S, S, 3)
        img = torch.from_numpy(np.ascontiguousarray(images)).to(device, non_blocking=False)
        prop = torch.from_numpy(np.asarray(proprio, np.float32)[None]).to(device)
        obs = model.encode_obs(prop, img, lang, lang_mask)
        return run_sampler(obs, gen)[0].float().cpu().numpy()  # .cpu() waits for the GPU

    return predict, info


def worker(wid: int, n: int, args: argparse.Namespace, counters: Any, stop: Any, q: Any) -> None:
    _thread_env()
    try:
        import numpy as np
        import torch

        torch.set_num_threads(1)
        from libero_dp import sim
        from libero_dp.expert import NOOP, make_expert

        device = args.device
        task = sim.resolve_tasks(args.task)[0]
        inits = sim.official_init_states(task)
        t0 = time.perf_counter()
        env = sim.make_env(task, args.image_size)
        build_s = time.perf_counter() - t0
        expert = make_expert(task)
        predict, pinfo = build_policy(args, device)
        row = counters  # flat array, this worker's slots at wid * NF

        def add(field: str, v: float) -> None:
            row[wid * NF + IDX[field]] += v

        # Warm-up outside the counters: a reset, a render pair, two policy calls (allocator, kernels, numba).
        obs = sim.reset_to(env, 0, inits[0])
        frames_now = {k: sim.upright(v) for k, v in sim.render_views(env, args.image_size).items()}
        hist = {k: np.stack([v, v]) for k, v in frames_now.items()}
        for _ in range(2):
            predict(hist, np.zeros(10, np.float32))
        info: dict[str, Any] = {"wid": wid, "env_build_s": build_s, "policy": pinfo, "pid": os.getpid()}
        if wid == 0:
            try:
                from OpenGL import GL

                info["gl_renderer"] = GL.glGetString(GL.GL_RENDERER).decode()
                info["gl_vendor"] = GL.glGetString(GL.GL_VENDOR).decode()
            except Exception as e:
                info["gl_renderer"] = f"unknown ({e!r})"
            if device.startswith("cuda"):
                info["gpu_name"] = torch.cuda.get_device_name(0)
        q.put(("ready", info))

        k = wid  # worker w runs init states w, w + n, w + 2n, ...
        while not stop.value:
            t0 = time.perf_counter()
            obs = sim.reset_to(env, k, inits[k % len(inits)])
            add("reset_s", time.perf_counter() - t0)
            add("resets", 1)
            for _ in range(args.wait):
                obs, _, _, _ = env.step(NOOP.copy())
                add("steps", 1)
            expert.reset(env)
            buf: dict[int, dict[str, np.ndarray]] = {}
            success = False
            for t in range(args.episode_steps):
                if stop.value:
                    break
                until = (-t) % args.replan  # steps until the next re-plan reads images
                if until <= 1:
                    r0 = time.perf_counter()
                    buf[t] = {kk: sim.upright(v) for kk, v in sim.render_views(env, args.image_size).items()}
                    add("render_s", time.perf_counter() - r0)
                    add("renders", 2)  # two cameras
                    for old in [s for s in buf if s < t - 1]:
                        del buf[old]
                if until == 0:
                    steps = [max(t - 1, 0), t]
                    frames = {c: np.stack([buf[s][c] for s in steps]) for c in buf[t]}
                    proprio = np.concatenate(
                        [obs["robot0_eef_pos"], obs["robot0_eef_quat"], obs["robot0_gripper_qpos"], [0.0]]
                    ).astype(np.float32)
                    p0 = time.perf_counter()
                    chunk = predict(frames, proprio)
                    add("policy_s", time.perf_counter() - p0)
                    add("policy_calls", 1)
                    if not np.all(np.isfinite(chunk)):
                        raise FloatingPointError("policy chunk has non-finite values")
                action = np.clip(expert.act(env, obs), -1.0, 1.0)
                obs, _, done, _ = env.step(action)
                add("steps", 1)
                success = success or bool(done)
            else:
                add("episodes", 1)
                add("successes", float(success))
            k += n
        env.close()
        q.put(("done", {"wid": wid}))
    except Exception:
        q.put(("error", {"wid": wid, "traceback": traceback.format_exc()}))


def snapshot(counters: Any, n: int) -> dict[str, float]:
    vals = list(counters[:])
    return {f: sum(vals[w * NF + i] for w in range(n)) for i, f in enumerate(FIELDS)}


def run_n(n: int, args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    counters = ctx.RawArray("d", n * NF)
    stop = ctx.RawValue("b", 0)
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(w, n, args, counters, stop, q), daemon=True) for w in range(n)]
    t_start = time.perf_counter()
    for p in procs:
        p.start()
    ready: list[dict[str, Any]] = []

    def drain(timeout: float) -> None:
        try:
            kind, info = q.get(timeout=timeout)
        except Exception:
            return
        if kind == "error":
            raise RuntimeError(f"worker {info['wid']} failed:\n{info['traceback']}")
        if kind == "ready":
            ready.append(info)

    try:
        deadline = time.perf_counter() + args.startup_timeout
        while len(ready) < n:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"only {len(ready)}/{n} workers ready after {args.startup_timeout} s")
            if any(not p.is_alive() for p in procs) and q.empty():
                dead = [(i, p.exitcode) for i, p in enumerate(procs) if not p.is_alive()]
                raise RuntimeError(f"worker(s) exited before ready: {dead}")
            drain(1.0)
        startup_s = time.perf_counter() - t_start
        load_before = os.getloadavg()

        def wait(seconds: float) -> None:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                drain(min(0.5, max(end - time.perf_counter(), 0.01)))

        wait(args.warmup)
        a, ta = snapshot(counters, n), time.perf_counter()
        wait(args.window)
        b, tb = snapshot(counters, n), time.perf_counter()
        load_after = os.getloadavg()
    finally:
        stop.value = 1
        for p in procs:
            p.join(timeout=30)
        for p in procs:  # only the processes this function started
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    d = {f: b[f] - a[f] for f in FIELDS}
    wall = tb - ta
    steps_per_episode = args.wait + args.episode_steps
    first = min(ready, key=lambda r: r["wid"])
    out = {
        "workers": n,
        "window_s": wall,
        "warmup_s": args.warmup,
        "startup_s": startup_s,
        "env_steps": int(d["steps"]),
        "env_steps_per_s": d["steps"] / wall,
        "env_steps_per_s_per_worker": d["steps"] / wall / n,
        "episodes_completed": int(d["episodes"]),
        "episodes_per_hour": 3600.0 * d["episodes"] / wall,
        "episodes_per_hour_from_steps": 3600.0 * d["steps"] / wall / steps_per_episode,
        "steps_per_episode": steps_per_episode,
        "camera_renders_per_s": d["renders"] / wall,
        "render_ms_per_camera": 1000.0 * d["render_s"] / d["renders"] if d["renders"] else None,
        "policy_calls_per_s": d["policy_calls"] / wall,
        "policy_ms": 1000.0 * d["policy_s"] / d["policy_calls"] if d["policy_calls"] else None,
        "reset_s_mean": d["reset_s"] / d["resets"] if d["resets"] else None,
        "successes_in_window": int(d["successes"]),
        "env_build_s_mean": sum(r["env_build_s"] for r in ready) / n,
        "gl_renderer": first.get("gl_renderer"),
        "gl_vendor": first.get("gl_vendor"),
        "gpu_name": first.get("gpu_name"),
        "loadavg_before": list(load_before),
        "loadavg_after": list(load_after),
        "_policy": first["policy"],
    }
    return out


def merge(path: Path, doc: dict[str, Any], runs: list[dict[str, Any]], label: str) -> dict[str, Any]:
    old = json.loads(path.read_text()) if path.exists() else {}
    keep = [
        r
        for r in old.get("runs", [])
        if not (r.get("machine") == label and r["workers"] in {x["workers"] for x in runs})
    ]
    merged = {**old, **{k: v for k, v in doc.items() if k != "runs"}}
    merged["runs"] = sorted(keep + runs, key=lambda r: (r.get("machine", ""), r["workers"]))
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--task", default="libero_90:0")
    ap.add_argument("--device", default="cuda", help="policy device: cuda | cpu")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--sampling-steps", type=int, default=5)
    ap.add_argument("--replan", type=int, default=64, help="re-plan every this many steps (= chunk length H)")
    ap.add_argument(
        "--episode-steps", type=int, default=400, help="policy steps per episode (eval.max_steps)"
    )
    ap.add_argument("--wait", type=int, default=10, help="no-op steps after reset (eval.num_steps_wait)")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds after all workers are ready")
    ap.add_argument("--window", type=float, default=60.0, help="measured wall seconds per worker count")
    ap.add_argument("--startup-timeout", type=float, default=240.0)
    ap.add_argument("--label", default=None, help="machine label in the results (default: gpu or cpu)")
    ap.add_argument("--note", action="append", default=[], help="free text stored with these runs")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eval_gpu.json")
    args = ap.parse_args()
    _thread_env()
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    label = args.label or ("gpu" if args.device.startswith("cuda") else "cpu")

    runs = []
    for n in args.workers:
        print(
            f"[eval_gpu] {label}: {n} worker(s), warm-up {args.warmup:.0f} s, window {args.window:.0f} s",
            flush=True,
        )
        r = run_n(n, args)
        policy = r.pop("_policy")
        r.update(
            machine=label,
            device=args.device,
            host_cpus=os.cpu_count(),
            platform=platform.platform(),
            mujoco_gl=os.environ.get("MUJOCO_GL"),
            notes=list(args.note),
        )
        runs.append(r)
        print(
            f"[eval_gpu] N={n}: {r['env_steps_per_s']:.1f} steps/s, {r['episodes_per_hour']:.0f} ep/h "
            f"({r['episodes_per_hour_from_steps']:.0f} from steps), "
            f"{r['camera_renders_per_s']:.1f} renders/s "
            f"({r['render_ms_per_camera']:.1f} ms each), policy {r['policy_ms']:.1f} ms, "
            f"reset {r['reset_s_mean']:.2f} s, renderer {r['gl_renderer']!r}",
            flush=True,
        )
    doc = {
        "what": (
            "closed-loop eval throughput: N spawned workers, one LIBERO env each (libero_dp.sim), "
            "official init states, policy re-plans every H steps reading both 128x128 cameras at the "
            "current and previous step (sim.render_views, rendered only then) and runs DiffusionPolicy + "
            "sampler on the policy device; actions from the scripted expert; episodes run their full "
            "length (no early stop)"
        ),
        "task": args.task,
        "protocol": {
            "episode_steps": args.episode_steps,
            "wait_steps": args.wait,
            "replan_every": args.replan,
            "image_history": 2,
            "cameras": 2,
            "image_size": args.image_size,
        },
        "policy": policy,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(merge(args.out, doc, runs, label), indent=2) + "\n")
    print(f"[eval_gpu] wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
