#!/bin/bash
# every benchmark of this session's performance account, one after another, alone
cd /work/main
B=/work/runs/bench
git log --oneline -1 > $B/commit.txt
date -u +%FT%TZ > $B/start.txt
for i in 1 2; do
  /work/bench-venv/bin/python benchmarks/versus.py --repeats 5 > $B/versus-skylakex-$i.txt 2>&1
  OPENBLAS_CORETYPE=Haswell /work/bench-venv/bin/python benchmarks/versus.py --repeats 5 > $B/versus-haswell-$i.txt 2>&1
done
for i in 1 2; do
  .venv/bin/python benchmarks/cell_account.py --repeats 5 > $B/cell-account-$i.txt 2>&1
  .venv/bin/python benchmarks/meta_step.py > $B/meta-step-$i.txt 2>&1
  L2L_REF_THREADS=1 .venv/bin/python benchmarks/trial.py --problem quadratic --epochs 20 --eval-every 10 > $B/trial-quadratic-$i.txt 2>&1
done
L2L_REF_THREADS=1 .venv/bin/python benchmarks/trial.py --problem mnist --data-dir /work/shared/data/mnist --epochs 20 --eval-every 10 > $B/trial-mnist-2.txt 2>&1
.venv/bin/python benchmarks/throughput.py > $B/throughput-1.txt 2>&1
date -u +%FT%TZ > $B/end.txt
