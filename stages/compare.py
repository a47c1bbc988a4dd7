"""compare: DVC experiments and MLflow runs side by side -> reports/compare.{md,html,png} and stdout.

Not a DVC stage (it reads across experiments): `make compare` runs it; the logic is `libero_dp.compare`.
Usage: python stages/compare.py [--out-dir reports] [--head-only] [--mlflow-stage eval|report]
"""

from libero_dp.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
