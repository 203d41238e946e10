"""ShadowDB API command line.

python -m api serve [--host 127.0.0.1] [--port 8080]   # settings from SHADOWDB_API_*
python -m api worker                                    # a job worker only (other machines); until SIGTERM
python -m api migrate                                   # apply catalog migrations
python -m api create-token --scope admin|write|read [--name ops]   # prints the token, once
python -m api revoke-token ID
python -m api devdb start --dir DIR                     # local catalog server; prints its URL
python -m api devdb stop --dir DIR
"""

import argparse
import logging
import os
import sys
from pathlib import Path


def _settings():
    from .settings import Settings

    settings = Settings()
    if not settings.database_url:
        sys.exit("SHADOWDB_API_DATABASE_URL is not set (python -m api devdb start --dir DIR gives one)")
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the API (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--log-level", default="info")
    worker = sub.add_parser("worker", help="run a job worker (no HTTP) on the catalog, until SIGTERM")
    worker.add_argument("--log-level", default="info")
    sub.add_parser("migrate", help="apply catalog migrations")
    token = sub.add_parser("create-token", help="create a bearer token (printed once)")
    token.add_argument("--scope", choices=("admin", "write", "read"), required=True)
    token.add_argument("--name", default=None)
    revoke = sub.add_parser("revoke-token", help="revoke a token by id")
    revoke.add_argument("id", type=int)
    devdb = sub.add_parser("devdb", help="a local PostgreSQL server for the catalog")
    devdb.add_argument("action", choices=("start", "stop", "url"))
    devdb.add_argument("--dir", type=Path, required=True)
    devdb.add_argument("--port", type=int, default=None)
    onboard = sub.add_parser("onboard", help="create a tenant through a running API and follow its job")
    onboard.add_argument("spec", help="tenant spec as JSON")
    onboard.add_argument("--url", default="http://127.0.0.1:8080")
    onboard.add_argument("--passfile", type=Path, default=None, help="write the password here (0600)")
    onboard.add_argument("--hostaddr", default=None, help="address to reach the tenant's host")
    onboard.add_argument("--sslrootcert", type=Path, default=None, help="the deployment CA (ca.crt)")
    args = parser.parse_args(argv)

    if args.command == "serve":
        import uvicorn

        from .app import create_app

        logging.basicConfig(
            level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        uvicorn.run(create_app(_settings()), host=args.host, port=args.port, log_level=args.log_level)
        return 0
    if args.command == "worker":
        from .catalog import migrate
        from .inventory import Inventory
        from .jobs import Engine

        logging.basicConfig(
            level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        settings = _settings()
        migrate(settings.database_url)
        inventory = Inventory(settings.inventory, settings.host_group, settings.repo)
        Engine(settings, routed=inventory.routed, declared=lambda: set(inventory.declared_tenants())).run()
        return 0
    if args.command == "migrate":
        from .catalog import migrate

        applied = migrate(_settings().database_url)
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
        return 0
    if args.command in ("create-token", "revoke-token"):
        from .catalog import Catalog, migrate

        settings = _settings()
        migrate(settings.database_url)
        catalog = Catalog(settings.database_url, max_size=2)
        catalog.open()
        try:
            if args.command == "create-token":
                token_id, token = catalog.create_token(args.name or f"{args.scope}-token", args.scope)
                print(token)
                print(f"token id {token_id}, scope {args.scope}: shown once, store it now", file=sys.stderr)
            elif not catalog.revoke_token(args.id):
                print(f"no active token {args.id}", file=sys.stderr)
                return 1
        finally:
            catalog.close()
        return 0
    if args.command == "devdb":
        from .devdb import DevDB, DevDBError

        try:
            if args.action == "start":
                if (args.dir / "devdb.json").exists():
                    db = DevDB.attach(args.dir)
                    if not db.running():
                        db.run()
                else:
                    db = DevDB.start(args.dir, args.port)
                print(db.url)
            elif args.action == "url":
                print(DevDB.attach(args.dir).url)
            else:
                if (args.dir / "devdb.json").exists():
                    DevDB.attach(args.dir).stop()
        except DevDBError as exc:
            print(f"devdb: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "onboard":
        import json

        from .client import onboard as run_onboard

        token = os.environ.get("SHADOWDB_API_TOKEN")
        if not token:
            sys.exit("SHADOWDB_API_TOKEN is not set (python -m api create-token --scope admin)")
        return run_onboard(
            args.url, token, json.loads(args.spec), args.passfile, args.hostaddr, args.sslrootcert
        )
    return 2


if __name__ == "__main__":
    sys.exit(main())
