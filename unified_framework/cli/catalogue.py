"""``mdlma catalogue``: ingest volumes into the catalogue (SciCat or local SQLite) and search it."""

from __future__ import annotations

import argparse
import json
import sys

from ..utils.text import printable


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "catalogue",
        help="catalogue datasets (SciCat, or a local SQLite file) and search them",
        description="Uses the SciCat server of [scicat] url if configured, else the SQLite file"
        " of 'catalogue' (MDLMA_CATALOGUE).",
    )
    sub = parser.add_subparsers(dest="catalogue_verb", required=True)

    ingest = sub.add_parser("ingest", help="extract metadata and catalogue volumes (idempotent)")
    ingest.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="volume file (DICOM, TIFF, HDF5/NeXus, NIfTI) or folder (DICOM series, TIFF slices, Zarr)",
    )
    ingest.add_argument(
        "--derived-from",
        action="append",
        default=[],
        metavar="PID_OR_PATH",
        help="input dataset (repeatable): the new datasets are derived from it",
    )
    ingest.add_argument(
        "--software",
        action="append",
        default=[],
        metavar="NAME",
        help="software that produced a derived dataset (repeatable)",
    )
    ingest.add_argument(
        "--job-parameters", metavar="JSON", help="parameters of the job that produced it"
    )
    ingest.add_argument("--name", help="dataset name (one PATH only; default: the file name)")
    ingest.add_argument(
        "--description", help="dataset description (default: a summary of the volume)"
    )
    ingest.add_argument("--keyword", action="append", default=[], help="keyword (repeatable)")
    ingest.add_argument(
        "--owner-group", help="owning group (default: [scicat] owner_group or your group)"
    )
    ingest.add_argument(
        "--access-group", action="append", default=[], help="group allowed to read (repeatable)"
    )
    ingest.add_argument(
        "--dry-run", action="store_true", help="show what would be catalogued; write nothing"
    )
    ingest.add_argument(
        "--update",
        action="store_true",
        help="if already catalogued, replace name, description, keywords and metadata",
    )
    ingest.add_argument("--json", action="store_true", help="print results as JSON")
    ingest.set_defaults(func=_ingest)

    search = sub.add_parser(
        "search", help="search datasets by text, metadata, date, type, group, keywords"
    )
    search.add_argument(
        "text",
        nargs="*",
        metavar="TEXT",
        help='free text: any word matches; "quoted phrases" must all occur',
    )
    search.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="CONDITION",
        help="metadata condition (repeatable, all must hold): 'voxel_size<1.5 um',"
        " 'dicom.Rows=512', 'dicom.Modality=CT'",
    )
    search.add_argument(
        "--from",
        dest="created_from",
        metavar="DATE",
        help="created on or after (YYYY-MM-DD or ISO)",
    )
    search.add_argument(
        "--to", dest="created_to", metavar="DATE", help="created on or before (YYYY-MM-DD or ISO)"
    )
    search.add_argument("--type", choices=("raw", "derived"), help="dataset type")
    search.add_argument(
        "--owner-group", action="append", default=[], help="owning group (repeatable: any of)"
    )
    search.add_argument(
        "--keyword", action="append", default=[], help="keyword (repeatable: all of)"
    )
    search.add_argument("--limit", type=int, default=25, help="results per page (default 25)")
    search.add_argument("--page", type=int, default=1, help="page number, from 1")
    search.add_argument(
        "--sort",
        default="creationTime",
        metavar="FIELD",
        help="creationTime (default), datasetName, size or numberOfFiles",
    )
    search.add_argument(
        "--ascending", action="store_true", help="sort ascending (default: descending)"
    )
    search.add_argument("--json", action="store_true", help="print the page as JSON")
    search.set_defaults(func=_search)

    show = sub.add_parser("show", help="show one dataset: fields, scientific metadata and files")
    show.add_argument("pid")
    show.add_argument("--json", action="store_true", help="print dataset and files as JSON")
    show.set_defaults(func=_show)


def _ingest(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..catalogue import extract_dataset, identity_from_config, open_catalogue
    from ..config import load_config
    from ..errors import InputError

    if args.name and len(args.paths) > 1:
        raise InputError("--name: applies to one PATH only; got several")
    try:
        job_parameters = json.loads(args.job_parameters) if args.job_parameters else None
    except json.JSONDecodeError as exc:
        raise InputError(f"--job-parameters: not valid JSON ({exc.msg})") from None
    if job_parameters is not None and not isinstance(job_parameters, dict):
        raise InputError("--job-parameters: expected a JSON object")
    if (args.software or job_parameters) and not args.derived_from:
        raise InputError(
            "--software/--job-parameters: describe derived datasets; add --derived-from"
        )
    config = load_config()
    identity = identity_from_config(config)
    if args.owner_group:
        identity["owner_group"] = args.owner_group
    catalogue = open_catalogue(config)
    inputs = catalogue.resolve_inputs(args.derived_from)
    results = []
    for path in tqdm(
        args.paths, desc="ingest", unit="dataset", disable=None if len(args.paths) > 1 else True
    ):
        record = extract_dataset(
            path,
            **identity,
            name=args.name,
            description=args.description,
            keywords=args.keyword,
            access_groups=args.access_group,
            input_datasets=inputs,
            used_software=args.software,
            job_parameters=job_parameters,
            progress=True,
        )
        result = catalogue.ingest(record, dry_run=args.dry_run, update=args.update)
        results.append(result)
        if not args.json:
            verb = {"create": "created", "update": "updated", "none": "exists"}[result.action]
            if result.dry_run and result.action != "none":
                verb = f"would be {verb}"
            # Paths and PIDs come from file names: escaped, so no name can forge a line or a column.
            tqdm.write(f"{verb}\t{printable(result.pid or '-')}\t{printable(record.path)}")
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "path": r.record.path,
                        "pid": r.pid,
                        "action": r.action,
                        "dry_run": r.dry_run,
                        **({"record": r.record.to_dict()} if r.dry_run else {}),
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    return 0


def _search(args: argparse.Namespace) -> int:
    from ..catalogue import MAX_SKIP, Query, open_catalogue, parse_condition, parse_time
    from ..catalogue.query import MAX_LIMIT
    from ..errors import InputError

    if not 1 <= args.limit <= MAX_LIMIT:
        raise InputError(
            f"--limit {args.limit}: expected a number of results from 1 to {MAX_LIMIT}"
        )
    last_page = MAX_SKIP // args.limit + 1  # the skip of later pages overflows the backends
    if not 1 <= args.page <= last_page:
        raise InputError(f"--page {args.page}: expected a page number from 1 to {last_page}")
    query = Query(
        text=" ".join(args.text),
        conditions=tuple(parse_condition(c) for c in args.where),
        created_from=parse_time(args.created_from) if args.created_from else None,
        created_to=parse_time(args.created_to, end_of_day=True) if args.created_to else None,
        dataset_type=args.type,
        owner_groups=tuple(args.owner_group),
        keywords=tuple(args.keyword),
        skip=(args.page - 1) * args.limit,
        limit=args.limit,
        sort=args.sort,
        descending=not args.ascending,
    )
    page = open_catalogue().search(query)
    if args.json:
        print(
            json.dumps(
                {
                    "total": page.total,
                    "skip": page.skip,
                    "limit": page.limit,
                    "datasets": page.datasets,
                },
                indent=2,
            )
        )
        return 0
    if not page.datasets:
        print(
            "no datasets match"
            if page.total == 0
            else f"page {args.page} is past the last of {page.total} datasets",
            file=sys.stderr,
        )
        return 0
    rows = [("PID", "TYPE", "CREATED", "SIZE", "NAME")] + [
        (
            d.get("pid", ""),
            d.get("type", ""),
            str(d.get("creationTime", ""))[:19].replace("T", " "),
            _size(d.get("size")),
            d.get("datasetName", ""),
        )
        for d in page.datasets
    ]
    widths = [max(len(printable(r[i])) for r in rows) for i in range(4)]
    for row in rows:
        print(
            "  ".join(printable(v).ljust(w) for v, w in zip(row[:4], widths))
            + "  "
            + printable(row[4])
        )
    print(
        f"{page.skip + 1}-{page.skip + len(page.datasets)} of {page.total} datasets"
        + (f" (next: --page {args.page + 1})" if page.has_more else ""),
        file=sys.stderr,
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    from ..catalogue import open_catalogue
    from ..catalogue.base import metadata_leaves

    catalogue = open_catalogue()
    dataset = catalogue.get(args.pid)
    files = catalogue.files(args.pid)
    if args.json:
        print(json.dumps({"dataset": dataset, "files": files}, indent=2))
        return 0
    for key in (
        "pid",
        "type",
        "datasetName",
        "description",
        "owner",
        "ownerGroup",
        "creationTime",
        "sourceFolder",
        "size",
        "numberOfFiles",
        "keywords",
        "inputDatasets",
        "usedSoftware",
    ):
        if key in dataset:
            value = dataset[key]
            print(
                f"{key}: {printable(', '.join(map(str, value)) if isinstance(value, list) else value)}"
            )
    print("scientificMetadata:")
    for key, value, unit in metadata_leaves(dataset.get("scientificMetadata") or {}):
        print(
            printable(
                f"  {key}: {json.dumps(value) if isinstance(value, list) else value}{' ' + unit if unit else ''}"
            )
        )
    print(f"files ({len(files)}):")
    for entry in files:
        print(
            f"  {printable(entry.get('path'))}\t{_size(entry.get('size'))}\t{printable(entry.get('chk', ''))}"
        )
    return 0


def _size(value: object) -> str:
    if not isinstance(value, (int, float)):
        return ""
    size, units, index = float(value), ("B", "KB", "MB", "GB", "TB", "PB"), 0
    while size >= 1000 and index < len(units) - 1:
        size, index = size / 1000, index + 1
    return f"{size:.0f} B" if index == 0 else f"{size:.1f} {units[index]}"
