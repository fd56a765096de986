#!/usr/bin/env bash
# The README's main job: dispatch six real tasks with cap 3 and print the peak of live agents.
#
# Installs the dependencies (if missing), configures the `release` preset, builds only
# examples/01_six_tasks.cpp and runs it. Exits with the example's status: 0 when the agents
# counted a peak of exactly 3 live agents and every task completed.
#
# Until the simulator (issue 3) and the `kugetsu` command (issue 4) exist, this example is the
# main job.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-debian.sh
cmake --preset release
cmake --build --preset release -j2 --target kugetsu-example-01_six_tasks

exec build/release/examples/kugetsu-example-01_six_tasks
