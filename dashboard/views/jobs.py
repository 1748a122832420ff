"""My jobs: the live queue (own jobs by default), filters, search, cancel, and sacct history."""

import streamlit as st
from components import cluster, joblist, ui

st.title("My jobs")
user = ui.current_user()

controls = st.columns([1, 2, 2, 3])
everyone = controls[0].toggle(
    "All users",
    value=False,
    key="jobs_all_users",
    help="Show every user's jobs (you can only cancel your own).",
)
states = controls[1].multiselect(
    "State",
    joblist.ACTIVE_STATES + ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"),
    key="jobs_states",
    placeholder="all states",
)
try:
    partition_names = list(ui.cached_cluster_state((str(ui.home()),))[0]["partition"])
except Exception:  # the queue below reports an unreachable cluster once
    partition_names = []
partitions = controls[2].multiselect(
    "Partition", partition_names, key="jobs_partitions", placeholder="all partitions"
)
search = controls[3].text_input(
    "Search", key="jobs_search", placeholder="job id, name, reason, node, folder"
)

queue_tab, history_tab = st.tabs(["Queue", "History"])


def cancel_requested(job_ids: list[str]) -> None:
    st.session_state["jobs_cancel_pending"] = job_ids


@st.fragment(run_every=ui.REFRESH_S)
def queue_section() -> None:
    try:
        table = ui.cached_queue(None if everyone else user)
    except Exception as exc:
        ui.show_error(exc)
        return
    shown = joblist.filter_jobs(table, states=states, partitions=partitions, search=search)
    counts = joblist.state_counts(shown)
    summary = ", ".join(f"{n} {state.lower()}" for state, n in counts.items()) or "no jobs"
    st.caption(
        f"{len(shown)} of {len(table)} jobs shown ({summary}); refreshed every {ui.REFRESH_S} s."
    )
    view = joblist.queue_view(shown)
    event = st.dataframe(
        view,
        key="jobs_queue_table",
        on_select="rerun",
        selection_mode="multi-row",
        hide_index=True,
        height=420,
    )
    selected = view.iloc[list(event.selection.rows)] if len(event.selection.rows) else view.iloc[:0]

    pending = st.session_state.get("jobs_cancel_pending")
    if pending:
        st.warning(
            f"Cancel {len(pending)} job(s): {', '.join(pending[:20])}{' ...' if len(pending) > 20 else ''}? "
            "Running work is lost.",
            icon=":material/warning:",
        )
        yes, no = st.columns(2)
        if yes.button("Yes, cancel", type="primary", key="jobs_cancel_confirm"):
            st.session_state.pop("jobs_cancel_pending")
            st.session_state["jobs_cancel_result"] = (pending, cluster.cancel(pending))
            ui.clear_cluster_cache()
            st.rerun()
        if no.button("Keep them", key="jobs_cancel_abort"):
            st.session_state.pop("jobs_cancel_pending")
            st.rerun()
    result = st.session_state.pop("jobs_cancel_result", None)
    if result:
        cancelled, error = result
        if error:
            st.error(f"Cancelling {len(cancelled)} job(s) failed: {error}")
        else:
            st.success(
                f"Cancelled {len(cancelled)} job(s): {', '.join(cancelled[:20])}{' ...' if len(cancelled) > 20 else ''}"
            )

    actions = st.columns([2, 3, 5])
    own = selected[(selected["user"] == user) & selected["state"].isin(joblist.CANCELLABLE_STATES)]
    actions[0].button(
        f"Cancel selected ({len(own)})",
        key="jobs_cancel",
        disabled=len(own) == 0,
        on_click=cancel_requested,
        args=(list(own["job"]),),
        help="Select your pending or running jobs in the table first.",
    )
    if len(selected) == 1:
        ui.viewer_link(selected["job"].iloc[0], where=actions[1])


with queue_tab:
    queue_section()

with history_tab:
    days = (
        st.segmented_control(
            "Period",
            [1, 7, 30],
            default=7,
            format_func=lambda d: f"last {d} days",
            key="jobs_history_days",
        )
        or 7
    )
    try:
        history = ui.cached_history(user, days)
    except Exception as exc:
        ui.show_error(exc)
    else:
        shown = joblist.filter_jobs(history, states=states, partitions=partitions, search=search)
        st.caption(
            f"{len(shown)} of {len(history)} finished or running jobs of {user} (from sacct). "
            "CPU efficiency: CPU time / (elapsed x CPUs); memory efficiency: peak RSS / requested memory."
        )
        event = st.dataframe(
            joblist.history_view(shown),
            key="jobs_history_table",
            hide_index=True,
            on_select="rerun",
            selection_mode="single-row",
            height=420,
        )
        if len(event.selection.rows):
            ui.viewer_link(str(shown["job_id"].iloc[event.selection.rows[0]]))
