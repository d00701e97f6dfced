"""Data standardisation commands: ``catalog scan|ls``, ``deid``, ``export-bids``, ``audit verify|keygen``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the data commands to the ``medlens`` app."""
    catalog_app = typer.Typer(help="Scan DICOM trees into a DuckDB catalog and query it.", no_args_is_help=True)
    audit_app = typer.Typer(help="Hash-chained (optionally HMAC-keyed) audit logs.", no_args_is_help=True)
    app.add_typer(catalog_app, name="catalog")
    app.add_typer(audit_app, name="audit")

    @catalog_app.command("scan")
    def catalog_scan(
        directory: Annotated[Path, typer.Argument(help="Folder tree of DICOM files (read only).")],
        db: Annotated[Path, typer.Option("--db", help="DuckDB catalog file (created or updated).")] = Path(
            "catalog.duckdb"
        ),
        workers: Annotated[
            int | None, typer.Option("--workers", help="Parallel processes (default: CPU cores; 1: no cluster).")
        ] = None,
        audit: Annotated[Path | None, typer.Option("--audit", help="Append an entry to this audit log.")] = None,
    ) -> None:
        """Scan DIRECTORY (headers only, incrementally) into the catalog."""
        from medlens.cli._common import check_inputs, check_output

        check_inputs(DIRECTORY=directory)
        check_output(db, name="--db")
        check_output(audit, name="--audit")
        from medlens.catalog import scan
        from medlens.pipeline.parallel import dask_mapper

        rep = scan(directory, db, workers=workers, audit_log=audit, mapper=dask_mapper)
        typer.echo(rep.summary())

    @catalog_app.command("ls")
    def catalog_ls(
        db: Annotated[Path, typer.Option("--db", help="DuckDB catalog file.")] = Path("catalog.duckdb"),
        modality: Annotated[
            str | None, typer.Option("--modality", help="Only this modality (CT, PT, RTSTRUCT, ...).")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    ) -> None:
        """List the catalogued series."""
        from medlens.catalog import Catalog

        with Catalog(db) as cat:
            rows = cat.series(modality=modality)
        if as_json:
            for r in rows.to_dict(orient="records"):
                typer.echo(json.dumps(r, default=str))
            return
        cols = ["patient_id", "modality", "n_instances", "series_description", "series_uid"]
        typer.echo("\t".join(cols))
        for r in rows[cols].itertuples(index=False):
            typer.echo("\t".join("" if v is None or v != v else str(v) for v in r))
        typer.echo(f"{len(rows)} series", err=True)

    @app.command("deid")
    def deid(
        input_dir: Annotated[Path, typer.Argument(help="DICOM input folder (never modified).")],
        output_dir: Annotated[Path, typer.Argument(help="Output folder (must not be inside the input).")],
        profile: Annotated[str, typer.Option("--profile", help="Confidentiality profile.")] = "basic",
        retain: Annotated[
            list[str] | None,
            typer.Option("--retain", help="Profile option: dates, patient-chars, device, descriptors (repeatable)."),
        ] = None,
        map_path: Annotated[
            Path | None, typer.Option("--map", help="Pseudonym map CSV (0600, outside the output).")
        ] = None,
        key_file: Annotated[
            Path | None,
            typer.Option(
                "--key-file", help="Secret key for UID/ID pseudonyms (default: random, kept in the map's folder)."
            ),
        ] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Allow an existing, non-empty output.")] = False,
        workers: Annotated[int, typer.Option("--workers", help="Parallel processes (1: in this process).")] = 1,
        audit: Annotated[Path | None, typer.Option("--audit", help="Append an entry to this audit log.")] = None,
        clean_pixels: Annotated[
            list[str] | None,
            typer.Option(
                "--clean-pixels",
                help="Blank a rectangle of burned-in text: MODALITY:COLSxROWS:x0,y0,x1,y1, e.g. US:640x480:0,0,640,60"
                " ('*' = any; repeatable). Cleaned images are written uncompressed.",
            ),
        ] = None,
    ) -> None:
        """De-identify INPUT_DIR into OUTPUT_DIR (DICOM PS3.15 Annex E Basic Profile)."""
        from medlens.cli._common import check_inputs, check_output

        check_inputs(INPUT_DIR=input_dir)
        check_output(output_dir, name="OUTPUT_DIR", folder=True)
        check_output(map_path, name="--map")
        check_output(audit, name="--audit")
        from medlens.io.deid import deidentify
        from medlens.pipeline.parallel import dask_mapper

        rep = deidentify(
            input_dir,
            output_dir,
            profile=profile,
            retain=tuple(retain or ()),
            map_path=map_path,
            key_file=key_file,
            overwrite=overwrite,
            workers=workers,
            mapper=dask_mapper,
            audit_log=audit,
            clean_pixels=tuple(clean_pixels or ()),
        )
        typer.echo(rep.summary())

    @app.command("export-bids")
    def export_bids_cmd(
        catalog: Annotated[Path, typer.Argument(help="DuckDB catalog made by `medlens catalog scan`.")],
        output_dir: Annotated[Path, typer.Argument(help="BIDS-style output folder.")],
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Allow an existing, non-empty output.")] = False,
    ) -> None:
        """Export the catalogued image series as BIDS-style NIfTI + JSON sidecars."""
        from medlens.cli._common import check_inputs, check_output

        check_inputs(CATALOG=catalog)
        check_output(output_dir, name="OUTPUT_DIR", folder=True)
        from medlens.catalog.bids import export_bids

        rep = export_bids(catalog, output_dir, overwrite=overwrite)
        typer.echo(rep.summary())

    @audit_app.command("verify")
    def audit_verify(
        log: Annotated[Path, typer.Argument(help="JSON-lines audit log.")],
        expect_count: Annotated[
            int | None, typer.Option("--expect-count", help="Number of entries recorded elsewhere.")
        ] = None,
        key_file: Annotated[
            Path | None,
            typer.Option(
                "--key-file",
                envvar="MEDLENS_AUDIT_KEY_FILE",
                help="Secret key the entries were authenticated with (HMAC-SHA256); without it only the plain "
                "chain is checked. Default: $MEDLENS_AUDIT_KEY_FILE.",
            ),
        ] = None,
    ) -> None:
        """Verify the chain (and, with the key, every entry's MAC); say which guarantee holds.

        Exit code 3 and the first bad entry when the log was tampered with.
        """
        from medlens.core.audit import verify
        from medlens.core.errors import FormatError

        res = verify(log, expect_count=expect_count, key_file=key_file)
        if not res.ok:
            raise FormatError(
                f"audit log {log}: entry {res.first_bad} of {res.n_entries} is bad: {res.reason} [{res.guarantee}]"
            )
        typer.echo(f"ok: {res.n_entries} entries, chain intact")
        typer.echo(res.guarantee)

    @audit_app.command("keygen")
    def audit_keygen(
        key_file: Annotated[Path, typer.Argument(help="Key file to create (mode 0600; never overwritten).")],
    ) -> None:
        """Create a random secret key for keyed audit logs (set MEDLENS_AUDIT_KEY_FILE to use it).

        Keep the key outside the log's folder: whoever can read it can forge entries.
        """
        from medlens.core.audit import create_key_file

        key = create_key_file(key_file)
        typer.echo(f"created {key_file} (mode 0600), key id {key.key_id}")
