"""scale: split demos, fit units + normalisation on the training split, write model-unit arrays."""

from libero_dp.config import load_params
from libero_dp.scale import scale
from libero_dp.stage import run_stage

if __name__ == "__main__":
    extracted = load_params("extract").out_dir
    run_stage("scale", lambda p: scale(p, extracted), "metrics/scale.json")
