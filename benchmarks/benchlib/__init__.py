"""Pieces of the benchmark harness behind benchmarks/run.py.

procs      process groups, /proc readings (CPU time, RSS), bounded runs
servers    the servers under test: how to start each, what each can do
scenarios  the loads (a)-(e): which client, which counts, which figures
report     the one table (and the JSON file) from one run
checkout   importing smtp_stack from another checkout (--tree)
"""
