"""windows: RDT-style training windows (action chunks, image history) as memory-mappable indices."""

from libero_dp.config import load_params
from libero_dp.stage import run_stage
from libero_dp.windows import build_windows

if __name__ == "__main__":
    extracted, scaled = load_params("extract").out_dir, load_params("scale").out_dir
    run_stage("windows", lambda p: build_windows(p, extracted, scaled), "metrics/windows.json")
