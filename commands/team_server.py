"""A team's tracking server for a trial run on one machine: PostgreSQL in a folder of your choice, an MLflow
tracking server on it serving the artifacts, and Optuna's study storage in the same PostgreSQL.

    python -m commands.team_server start ~/mm-server     # initdb the first time, then start both
    eval "$(python -m commands.team_server env ~/mm-server)"   # MLFLOW_TRACKING_URI, OPTUNA_STORAGE, PGPASSFILE
    python -m commands.team_server stop ~/mm-server      # both stop; the runs and artifacts stay in the folder

127.0.0.1 only, a generated password (scram-sha-256) kept in <folder>/pgpass (0600). A team with a server
already running skips this and exports its addresses (docs/team.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medical_matryoshka.core.errors import run_main
from medical_matryoshka.team.server import env_lines, read_state, start, stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("start", "stop", "env"))
    parser.add_argument("folder", type=Path, help="where PostgreSQL's data, the artifacts and the logs live")
    parser.add_argument("--pg-port", type=int, help="PostgreSQL's port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--port", type=int, help="the MLflow server's port on 127.0.0.1 (default: a free one)")
    args = parser.parse_args()
    if args.action == "start":
        server = start(args.folder, args.pg_port, args.port)
        print(
            f"MLflow tracking server {server.tracking_uri} (PostgreSQL 127.0.0.1:{server.pg_port}, artifacts in "
            f"{Path(server.folder) / 'artifacts'}); for this shell:"
        )
        print(f'  eval "$(python -m commands.team_server env {args.folder})"')
    elif args.action == "stop":
        stop(args.folder)
        print(f"stopped; the runs and artifacts stay in {args.folder}")
    else:
        print("\n".join(env_lines(read_state(args.folder.resolve()))))


if __name__ == "__main__":
    run_main(main)
