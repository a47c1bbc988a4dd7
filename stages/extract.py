"""extract: validate official-layout HDF5 files and write memory-mappable arrays."""

from libero_dp.extract import extract
from libero_dp.stage import run_stage

if __name__ == "__main__":
    run_stage("extract", extract, "metrics/extract.json")
