"""Job viewer: state and timeline, log tail, training curves, volume outputs and scores.

Arrive with ``?job=<id>`` (links from the other pages) or pick a job; "Folder" opens
any folder below the user's job roots. Every file read goes through
:func:`components.paths.resolve_inside`.
"""

from pathlib import Path

import streamlit as st
from components import cluster, joblist, logs, metrics, paths, ui, volume_view, volumes

from unified_framework.utils.text import shorten

st.title("Job viewer")
user = ui.current_user()
roots = ui.job_roots()


def shown(path):
    """A path as text, relative to the open folder when it lies inside it."""
    return (
        str(path.relative_to(folder))
        if folder is not None and path.is_relative_to(folder)
        else str(path)
    )


mode = st.segmented_control(
    "Open", ["Job", "Folder"], default="Job", key="viewer_mode", required=True
)
info = None
folder = None
if mode == "Job":
    recent = ui.cached_recent_jobs(user)
    options = list(recent["job_id"])
    wanted = st.query_params.get("job", "")
    if wanted and wanted not in options:
        options.insert(0, wanted)
    labels = dict(zip(recent["job_id"], recent["name"]))
    job_id = st.selectbox(
        "Job",
        options,
        index=options.index(wanted) if wanted else (0 if options else None),
        format_func=lambda j: f"{j}  {labels.get(j, '')}",
        accept_new_options=True,
        key="viewer_job",
        placeholder="job id",
    )
    if job_id:
        job_id = str(job_id).strip()
        if st.query_params.get("job") != job_id:
            st.query_params["job"] = job_id
        info = cluster.job_info(job_id, user)
        if info is None:
            st.error(f"Job {job_id}: not found among your jobs (queue, accounting or job records).")
        else:
            if (
                info["record"] is not None
            ):  # the framework recorded this job there: a job root (maybe a new one)
                roots.append(Path(info["workdir"]))
            try:
                folder = paths.resolve_inside(info["workdir"], roots)
            except paths.PathRefused as exc:
                ui.show_error(exc)
            if folder is not None and not folder.is_dir():
                st.warning(f"{folder}: the job's working directory no longer exists.")
                folder = None
else:
    text = st.text_input(
        "Folder",
        value=str(ui.home()),
        key="viewer_folder",
        help="A folder below your MDLMA home or a job's working directory.",
    )
    try:
        folder = paths.resolve_inside(text, roots)
        if not folder.is_dir():
            st.error(f"{shorten(text)}: not a folder")
            folder = None
    except paths.PathRefused as exc:
        ui.show_error(exc)

active = info is not None and info["state"] in joblist.ACTIVE_STATES
REFRESH_S = 3


@st.fragment(run_every=REFRESH_S if active else None)
def job_header(job_id: str) -> None:
    """State, times and timeline; while the job is active it is re-read every few seconds,
    and the whole page reloads once it has finished (to show its final outputs)."""
    current = cluster.job_info(job_id, user) if active else info
    if current is None:
        return
    if active and current["state"] not in joblist.ACTIVE_STATES:
        st.rerun(scope="app")
    head = st.columns(5)
    head[0].metric("State", current["state"])
    head[1].metric("Elapsed", joblist.format_duration(current["elapsed_s"]) or "-")
    head[2].metric("Time limit", joblist.format_duration(current["time_limit_s"]) or "-")
    head[3].metric("Partition", current["partition"] or "-")
    head[4].metric("Nodes", current["nodes"] or "-")
    st.caption(
        f"{current['name']} · submitted {current['submit_time'] or '-'} · started "
        f"{current['start_time'] or '-'} · ended {current['end_time'] or '-'} · {current['workdir']}"
    )
    timeline = joblist.timeline_figure(current)
    if timeline is not None:
        st.plotly_chart(timeline, key="viewer_timeline")


if info is not None:
    job_header(info["job_id"])
    record = info["record"]
    if record is not None:
        with st.expander(f"Submitted with the {record.template} template"):
            st.json(record.params, expanded=False)
            for text in record.scripts().values():
                st.code(text, language="bash")
        st.page_link(
            "views/composer.py",
            label="Copy this job in the composer",
            icon=":material/content_copy:",
            query_params={"template": record.template, "copy": record.path},
        )
        if record.template == "denoise" and record.params.get("input") and record.params.get("out"):
            st.page_link(
                "views/denoise.py",
                label="Before and after (slices, difference, line profile)",
                icon=":material/blur_on:",
                query_params={"before": record.params["input"], "after": record.params["out"]},
            )

if folder is not None:
    refresh = REFRESH_S if active else None
    log_tab, metrics_tab, volume_tab, files_tab = st.tabs(["Log", "Metrics", "Volumes", "Files"])

    with log_tab:
        candidates = [info["stdout"]] if info and info["stdout"] else []
        candidates += [
            p
            for p in sorted(folder.glob("*.out"))
            + sorted(folder.glob("*.err"))
            + sorted(folder.glob("*.log"))
            if p not in candidates
        ]
        readable = paths.allowed(candidates, roots)
        if not readable:
            st.info("No log file yet.")
        else:
            log_path = st.selectbox(
                "Log file", readable, format_func=lambda p: p.name, key="viewer_log"
            )

            @st.fragment(run_every=refresh)
            def show_log() -> None:
                if log_path.is_file():
                    st.code(
                        logs.tail(log_path, max_lines=300) or "(empty)", language=None, height=400
                    )
                else:
                    st.info(f"{log_path.name} does not exist yet.")
                if refresh:
                    st.caption(f"Refreshing every {refresh} s while the job runs.")

            show_log()

    with metrics_tab:
        metric_files = paths.allowed(
            paths.walk_files(folder, lambda p: p.suffix == ".jsonl" and p.is_file(), limit=50),
            roots,
        )
        if not metric_files:
            st.info("No JSON-lines metrics in this folder (training jobs write metrics.jsonl).")
        else:
            metrics_path = st.selectbox(
                "Metrics file", metric_files, format_func=shown, key="viewer_metrics"
            )

            @st.fragment(run_every=refresh)
            def show_metrics() -> None:
                table = metrics.read_metrics(paths.resolve_inside(metrics_path, roots))
                if table.empty:
                    st.info("No metrics recorded yet.")
                    return
                last = table.iloc[-1]
                st.caption(
                    f"{len(table)} records"
                    + (f"; last step {int(last['step'])}." if "step" in table else ".")
                )
                groups = metrics.metric_groups(table)
                for start in range(0, len(groups), 2):
                    columns = st.columns(2)
                    for column, (title, names) in zip(
                        columns, list(groups.items())[start : start + 2]
                    ):
                        column.plotly_chart(
                            metrics.metric_figure(table, names, title), key=f"viewer_metric_{title}"
                        )

            show_metrics()

    with volume_tab:
        inputs = [
            Path(p) for p in (info["inputs"] if info else []) if volumes.volume_suffix(Path(p))
        ]
        found = paths.allowed([*volumes.find_volumes(folder), *inputs], roots)
        if not found:
            st.info("No volume outputs (TIFF, HDF5, NIfTI, Zarr) in this folder.")
        else:
            guess = volumes.assign_roles(found)
            if st.session_state.get("viewer_found") != found:  # new outputs: take the guesses again
                for role in guess:
                    st.session_state.pop(f"viewer_role_{role}", None)
                st.session_state["viewer_found"] = found
            choice = {}
            role_columns = st.columns(4)
            for column, (role, title) in zip(
                role_columns,
                [
                    ("image", "Image"),
                    ("labels", "Labels"),
                    ("uncertainty", "Uncertainty"),
                    ("ground_truth", "Ground truth"),
                ],
            ):
                options = [None, *found]
                choice[role] = column.selectbox(
                    title,
                    options,
                    index=options.index(guess[role]),
                    format_func=lambda p: "(none)" if p is None else shown(p),
                    key=f"viewer_role_{role}",
                )
            try:
                volume_view.slice_panel(choice, key="viewer")
            except Exception as exc:
                ui.show_error(exc)

    with files_tab:
        entries = sorted(folder.iterdir())[:500]
        st.dataframe(
            {
                "name": [p.name + ("/" if p.is_dir() else "") for p in entries],
                "size MiB": [
                    round(p.stat().st_size / 2**20, 2) if p.is_file() else None for p in entries
                ],
            },
            hide_index=True,
            key="viewer_files",
        )
