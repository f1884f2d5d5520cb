#!/bin/bash
cd /tmp/s41/ab_inst
for round in 1 2; do
  for v in old new; do
    rm -rf .venv_$v
    f=Makefile; [ $v = old ] && f=Makefile.old
    s=$(date +%s.%N)
    make -f $f install VENV=.venv_$v > /tmp/s41/ab_inst_$v.log 2>&1
    e=$(date +%s.%N)
    echo "$round $v $(python3 -c "print(round($e-$s,1))") s, pyc $(find .venv_$v/lib -name '*.pyc' | wc -l), load $(cut -d' ' -f1 /proc/loadavg)" >> /tmp/s41/ab_inst.txt
  done
done
