"""Job composer: template -> generated form -> exact batch script -> submit -> link to the viewer.

The form comes from the template's ``form.yml``; every value is validated by the SLURM
library (against the cluster's partitions and limits) on each change, problems are
shown under their field, and the submit button stays disabled until there are none.
Arrive with ``?template=<name>`` or ``?template=<name>&copy=<record folder>``, or from the
catalogue page, which leaves ``composer_prefill`` (template, values, source) in the session.
"""

import streamlit as st
from components import forms, paths, ui

from unified_framework import hpc
from unified_framework.errors import MDLMAError

st.title("Job composer")
root = ui.home()
user = ui.current_user()


@st.cache_data(ttl=30, show_spinner=False)
def templates() -> list:
    return hpc.list_templates()


@st.cache_data(ttl=30, show_spinner=False)
def cluster_limits():
    """Partitions and QoS for validation; None with the local backend (no scheduler to ask)."""
    return hpc.cluster_limits() if hpc.backend_name() == "slurm" else None


@st.cache_data(ttl=30, show_spinner=False)
def records_of(template_name: str, folders: tuple[str, ...]) -> list:
    """Earlier submissions of a template: below MDLMA_HOME and in the recorded working directories."""
    found = hpc.list_records(folders[0], recursive=True)
    for folder in folders[1:]:
        found += hpc.list_records(folder)
    unique = {r.path: r for r in found if r.template == template_name}
    return sorted(unique.values(), key=lambda r: r.submitted, reverse=True)


def widget_key(template, name: str) -> str:
    return f"composer_{template.name}_{name}"


def load_values(template, values: dict) -> None:
    """Put values into the widgets' session state (before the widgets are drawn)."""
    try:
        partitions, nodes, _ = ui.cached_cluster_state((str(root),))
    except MDLMAError:
        partitions = nodes = None
    for name, parameter in template.parameters.items():
        spec = forms.widget_spec(parameter, values.get(name), partitions, nodes)
        st.session_state[widget_key(template, name)] = spec.value


try:
    available = templates()
except MDLMAError as exc:
    ui.show_error(exc)
    st.stop()
if not available:
    st.info(f"No job templates found in {hpc.templates_dir()}.")
    st.stop()
by_name = {t.name: t for t in available}
wanted = st.query_params.get("template")
prefill = st.session_state.pop("composer_prefill", None)
if prefill and prefill["template"] in by_name:
    st.session_state["composer_template"] = prefill["template"]
if wanted in by_name and "composer_template" not in st.session_state:  # arriving from a link
    st.session_state["composer_template"] = wanted
name = st.selectbox(
    "Template",
    list(by_name),
    format_func=lambda n: f"{by_name[n].title}  ({n})",
    key="composer_template",
)
template = by_name[name]
st.query_params["template"] = name
st.caption(template.description)
if template.readme:
    with st.expander("About this template"):
        st.markdown(template.readme)

# Copy an earlier job: from the viewer's link (?copy=...) or from the list below.
copy_path = st.session_state.pop("composer_copy", None) or st.query_params.get("copy")
if copy_path:
    st.query_params.pop("copy", None)
    try:
        record = hpc.load_record(paths.resolve_inside(copy_path, ui.job_roots()))
        if record.template != template.name:
            raise MDLMAError(f"{copy_path}: a {record.template} job, not {template.name}")
        load_values(template, forms.initial_values(template, record.params))
        st.success(
            f"Copied the settings of the job submitted {record.submitted} ({', '.join(record.job_ids)})."
        )
    except MDLMAError as exc:
        ui.show_error(exc)
if prefill and prefill["template"] == template.name:
    load_values(
        template,
        forms.initial_values(
            template, {"workdir": str(root)}, forms.load_settings(template), prefill["values"]
        ),
    )
    st.info(
        f"Filled {', '.join(prefill['values'])} with {prefill['source']} from the catalogue.",
        icon=":material/dataset:",
    )
# Widget state is dropped when a page or template is left: fill the form again then.
elif any(widget_key(template, name) not in st.session_state for name in template.parameters):
    load_values(
        template,
        forms.initial_values(template, {"workdir": str(root)}, forms.load_settings(template)),
    )

with st.expander("Copy an earlier job"):
    folders = tuple(str(p) for p in ui.job_roots())
    earlier = records_of(template.name, folders)
    if not earlier:
        st.caption("No earlier job of this template in your folders.")
    else:
        by_path = {r.path: r for r in earlier}
        chosen = st.selectbox(
            "Earlier job",
            list(by_path),
            key="composer_copy_choice",
            format_func=lambda p: (
                f"{by_path[p].submitted}  jobs {', '.join(by_path[p].job_ids)}  "
                f"in {by_path[p].workdir}"
            ),
        )
        st.button(
            "Copy its settings",
            key="composer_copy_button",
            on_click=lambda: st.session_state.update(composer_copy=chosen),
        )

# The form: one widget per parameter, problems under their field.
values = {}
for name in template.parameters:
    values[name] = st.session_state.get(widget_key(template, name))
try:
    limits = cluster_limits()
except MDLMAError as exc:
    ui.show_error(exc)
    limits = None
errors = forms.field_errors(template, values, cwd=str(root), cluster=limits)
try:
    partitions, nodes, _ = ui.cached_cluster_state((str(root),))
except MDLMAError:
    partitions = nodes = None

st.subheader("Settings")
if "" in errors:
    st.error(errors[""])
columns = st.columns(2)
for number, (name, parameter) in enumerate(template.parameters.items()):
    spec = forms.widget_spec(parameter, values[name], partitions, nodes)
    key = widget_key(template, name)
    where = columns[number % 2]
    label = spec.label + (" 🔒" if spec.disabled else "")
    if spec.kind == "int":
        where.number_input(label, step=1, key=key, help=spec.help, disabled=spec.disabled)
    elif spec.kind == "float":
        where.number_input(label, key=key, help=spec.help, disabled=spec.disabled, format="%g")
    elif spec.kind == "bool":
        where.checkbox(label, key=key, help=spec.help, disabled=spec.disabled)
    elif spec.kind == "select":
        if st.session_state.get(key) not in spec.options:
            st.session_state[key] = spec.value
        where.selectbox(
            label,
            spec.options,
            key=key,
            help=spec.help,
            disabled=spec.disabled,
            format_func=lambda v: "(cluster default)" if v == "" else str(v),
        )
    else:
        where.text_input(
            label, key=key, help=spec.help, disabled=spec.disabled, placeholder=spec.placeholder
        )
    if name in errors:
        where.error(errors[name], icon=":material/error:")

st.subheader("Batch script")
if errors:
    st.warning("Fix the marked fields; the script is shown once every value is valid.")
    prepared = None
else:
    try:
        prepared = hpc.prepare(template, values, cwd=str(root), check_cluster=False)
    except MDLMAError as exc:
        ui.show_error(exc)
        prepared = None
    if prepared is not None:
        if len(prepared.scripts) == 1:
            st.code(prepared.scripts[0].text, language="bash")
        else:
            for tab, script in zip(st.tabs([s.step for s in prepared.scripts]), prepared.scripts):
                tab.code(script.text, language="bash")
        if prepared.backend == "local":
            st.caption("SLURM is not installed here: the job will run as a local process.")

actions = st.columns([1, 1, 1, 3])
if actions[0].button("Submit", type="primary", disabled=prepared is None, key="composer_submit"):
    try:
        record = hpc.submit(template, values, cwd=str(root))
    except MDLMAError as exc:
        ui.show_error(exc)
    else:
        ui.clear_cluster_cache()
        records_of.clear()
        st.session_state["composer_submitted"] = (template.name, record.job_ids, record.path)
if actions[1].button(
    "Save settings",
    key="composer_save",
    disabled=bool(errors),
    help="Use these values next time you open this template.",
):
    saved = forms.save_settings(template, values)
    st.toast(f"Saved to {saved}")
actions[2].button(
    "Reset to defaults",
    key="composer_reset",
    on_click=load_values,
    args=(template, forms.initial_values(template, {"workdir": str(root)})),
)

submitted = st.session_state.get("composer_submitted")
if submitted and submitted[0] == template.name:
    _, job_ids, record_path = submitted
    st.success(f"Submitted job {', '.join(job_ids)} (record {record_path}).")
    ui.viewer_link(job_ids[0], label=f"Watch job {job_ids[0]} in the viewer")
