"""collect: scripted-expert demonstrations in the real LIBERO scenes -> data/demos/<TASK>_demo.hdf5."""

from libero_dp.collect import collect
from libero_dp.stage import run_stage

if __name__ == "__main__":
    run_stage("collect", collect, "metrics/collect.json")
