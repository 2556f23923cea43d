"Command line shared by the benchmark scripts"
import argparse

def run_cli(main, rounds=15, batches=30):
    "Parse `--rounds`, `--batches`, `--json` and call `main(rounds, batches, json)`"
    p = argparse.ArgumentParser()
    p.add_argument('--rounds', type=int, default=rounds); p.add_argument('--batches', type=int, default=batches)
    p.add_argument('--json', default=None)
    a = p.parse_args()
    return main(a.rounds, a.batches, a.json)
