"""Parameter search: progress, the best trials, the score landscape (UMAP), a 2-parameter surface and parallel coordinates."""

from pathlib import Path

import streamlit as st
from components import search, ui

st.title("Parameter search")
root = ui.home()


@st.cache_data(ttl=30, show_spinner=False)
def studies_below(folder: str) -> list[Path]:
    return search.find_studies(Path(folder))


@st.cache_data(ttl=10, show_spinner="Placing the trials (UMAP) ...")
def cached_landscape(folder: str, done: int):
    del done  # part of the cache key: a new trial makes a new landscape
    return search.compute_landscape(Path(folder))


found = studies_below(str(root))
if not found:
    st.info(
        f"No search study below {root}. Start one with `mdlma search run PIPELINE.yml --data IMAGE TRUTH "
        "--study DIR --trials N` (or the search job template); see docs/search.md."
    )
    st.stop()

names = [str(f.relative_to(root)) if f != root else "." for f in found]
chosen = st.selectbox("Study", names, key="search_study")
folder = found[names.index(chosen)]
try:
    info, trials = search.load_study(folder)
except Exception as exc:  # a damaged or half-copied study: say so, keep the page
    ui.show_error(exc)
    st.stop()

follow = st.toggle("Follow a running search (refresh every 5 s)", key="search_follow")


@st.fragment(run_every=5 if follow else None)
def show_progress() -> None:
    current, done = search.load_study(folder)
    progress = search.progress_of(current, done)
    st.progress(
        min(1.0, progress["done"] / max(1, progress["target"])),
        text=f"{progress['done']} of {progress['target']} trials ({progress['failed']} failed) · "
        f"sampler {current['sampler']} · best {current['metric']} "
        + (f"{progress['best']:.4f}" if progress["best"] is not None else "-"),
    )
    if follow and progress["done"] != len(trials):
        st.rerun()  # new trials: redraw the tables and the landscape


show_progress()
if st.button("Refresh", key="search_refresh"):
    st.cache_data.clear()
    st.rerun()

complete = [t for t in trials if t["state"] == "complete"]
if not complete:
    st.info("No complete trial yet; the landscape appears with the first results.")
    st.stop()

st.subheader("Best trials")
best = search.best_table(trials)
st.dataframe(best, hide_index=True, width="stretch")
if st.button("Run the best on another dataset", key="search_run_best", type="primary"):
    from unified_framework.search import export_best

    target = folder / "best.yml"
    try:
        export_best(folder, target)
    except Exception as exc:
        ui.show_error(exc)
    else:
        st.session_state["composer_prefill"] = {
            "template": "pipeline",
            "values": {"pipeline": str(target)},
            "source": f"best trial of {chosen}",
        }
        st.switch_page("views/composer.py")

st.subheader("Score landscape")
frame, how = cached_landscape(str(folder), len(complete))
params = list(complete[0]["params"])
st.plotly_chart(search.landscape_figure(frame, how, info["metric"], params), key="search_landscape")
st.caption(
    "Each point is a trial: its parameters placed in 3D by UMAP (PCA below 10 trials, the parameters "
    "themselves, scaled to [0, 1], when there are at most three), coloured by its score. "
    "Nearby points had similar parameters: a bright cluster is a region that works."
)

if len(params) >= 2:
    st.subheader("Two parameters")
    cols = st.columns(2)
    a = cols[0].selectbox("x", params, index=0, key="search_a")
    b = cols[1].selectbox("y", [p for p in params if p != a], index=0, key="search_b")
    st.plotly_chart(
        search.surface_figure(frame, a, b, info["metric"], search.log_params(info)),
        key="search_surface",
    )
st.subheader("Parallel coordinates")
st.plotly_chart(search.parallel_figure(frame, params, info["metric"]), key="search_parallel")

failed = search.failed_table(trials)
if not failed.empty:
    st.subheader("Failed trials")
    st.dataframe(failed, hide_index=True, width="stretch")
