"""Resources: partitions, nodes, free CPUs/GPUs/memory, storage and the user's running jobs."""

import pandas as pd
import streamlit as st
from components import joblist, ui

st.title("Cluster resources")
user = ui.current_user()


def gib(values):
    return (values / 2**30).round(1)


@st.fragment(run_every=ui.REFRESH_S)
def overview() -> None:
    folders = tuple(str(p) for p in ui.job_roots())
    try:
        partitions, nodes, disks = ui.cached_cluster_state(folders)
        jobs = ui.cached_queue(user)
    except Exception as exc:
        ui.show_error(exc)
        return
    free = st.columns(4)
    free[0].metric(
        "Free CPUs", f"{int(nodes['cpus_idle'].sum())} / {int(nodes['cpus_total'].sum())}"
    )
    gpus_total = int(nodes["gpus_total"].sum())
    free[1].metric(
        "Free GPUs",
        f"{gpus_total - int(nodes['gpus_used'].sum())} / {gpus_total}" if gpus_total else "none",
    )
    free[2].metric(
        "Free memory",
        f"{gib(nodes['memory_free_bytes'].sum()):.0f} / {gib(nodes['memory_total_bytes'].sum()):.0f} GiB",
    )
    free[3].metric(
        "Nodes up",
        f"{int((~nodes['state'].str.contains('down|drain|fail', regex=True)).sum())} / {len(nodes)}",
    )

    st.subheader("Your jobs")
    counts = joblist.state_counts(jobs)
    running = jobs[jobs["state"] == "RUNNING"]
    mine = st.columns(4)
    mine[0].metric("Running", counts.get("RUNNING", 0))
    mine[1].metric("Pending", counts.get("PENDING", 0))
    mine[2].metric(
        "CPUs in use", int(pd.to_numeric(running["cpus"], errors="coerce").fillna(0).sum())
    )
    mine[3].metric(
        "Other states", sum(n for s, n in counts.items() if s not in ("RUNNING", "PENDING"))
    )
    st.page_link("views/jobs.py", label="All your jobs", icon=":material/view_list:")

    st.subheader("Partitions")
    st.dataframe(
        partitions.assign(
            memory_total_gib=gib(partitions["memory_total_bytes"]),
            memory_free_gib=gib(partitions["memory_free_bytes"]),
        ).drop(columns=["memory_total_bytes", "memory_free_bytes"]),
        hide_index=True,
        key="resources_partitions",
    )
    st.subheader("Nodes")
    st.dataframe(
        nodes.assign(
            memory_total_gib=gib(nodes["memory_total_bytes"]),
            memory_free_gib=gib(nodes["memory_free_bytes"]),
        ).drop(columns=["memory_total_bytes", "memory_free_bytes"]),
        hide_index=True,
        key="resources_nodes",
    )
    st.subheader("Storage and quotas")
    st.dataframe(
        pd.DataFrame(
            {
                "folder": disks["path"],
                "free GiB": gib(disks["free_bytes"]),
                "size GiB": gib(disks["total_bytes"]),
                "quota used GiB": gib(pd.to_numeric(disks["quota_used_bytes"], errors="coerce")),
                "quota GiB": gib(pd.to_numeric(disks["quota_limit_bytes"], errors="coerce")),
            }
        ),
        hide_index=True,
        key="resources_storage",
    )
    if disks["quota_limit_bytes"].isna().all():
        st.caption("No quota is reported for you on these file systems.")
    st.caption(f"Refreshed every {ui.REFRESH_S} s.")


overview()
