"""Library SL settings against the plan: env file, plan value, unset default."""

import pytest

from dualpath.errors import InputError
from dualpath.proofs.envfile import env_source
from dualpath.proofs.example_files import example, variant
from dualpath.proofs.library_settings import check_library_settings
from dualpath.proofs.pod_env import load_pod_envs
from dualpath.proofs.result import Status
from dualpath.proofs.traffic import load_traffic, with_sources


def test_paper_settings_agree():
    result = check_library_settings(load_traffic(example()["traffic"]))
    assert result.status is Status.PROVED and "NCCL_IB_SL=1" in result.detail


def test_env_value_on_the_kv_sl(tmp_path):
    paths = variant(tmp_path, {"env": [("export NCCL_IB_SL=1", "export NCCL_IB_SL=2")]})
    result = check_library_settings(load_traffic(paths["traffic"]))
    assert result.status is Status.VIOLATED and "NCCL_IB_SL=2" in result.witness and "paper.env:3" in result.witness
    assert result.fix == f"{paths['env']}:3: NCCL_IB_SL=1"


def test_unset_setting_means_sl_zero(tmp_path):
    paths = variant(tmp_path, {"env": [("MC_IB_SL=2\n", "")]})
    result = check_library_settings(load_traffic(paths["traffic"]))
    assert result.status is Status.VIOLATED and "MC_IB_SL is not set (library default SL 0)" in result.witness
    assert "MC_IB_SL=2" in result.fix


def test_plan_and_environment_disagree(tmp_path):
    paths = variant(tmp_path, {"traffic": [('setting = "UCX_IB_SL"', 'setting = "UCX_IB_SL"\nvalue = 3')]})
    result = check_library_settings(load_traffic(paths["traffic"]))
    assert result.status is Status.VIOLATED and "3 in the plan" in result.witness and "2 in the environment" in \
        result.witness


def test_one_library_cannot_serve_classes_on_two_sls(tmp_path):
    paths = variant(tmp_path, {"traffic": [('carries = ["alltoall"]', 'carries = ["alltoall", "allreduce"]')]})
    result = check_library_settings(load_traffic(paths["traffic"]))
    assert result.status is Status.VIOLATED and "one setting cannot serve them all" in result.witness


# Issue 17 item 3: environments from Kubernetes pod specs and --env files, each process checked alone.


POD = """apiVersion: v1
kind: Pod
metadata: {name: prefill-0}
spec:
  initContainers:
    - name: setup
      env: []
  containers:
    - name: engine
      env:
        - {name: NCCL_IB_SL, value: "1"}
        - name: MC_IB_SL
          valueFrom: {secretKeyRef: {name: s, key: k}}
"""


def test_pod_spec_gives_one_environment_per_container(tmp_path):
    path = tmp_path / "pod.yaml"
    path.write_text(POD)
    sources = load_pod_envs(path)
    assert [s.label.split(" ", 1)[1] for s in sources] == ["Pod/prefill-0 container setup",
                                                           "Pod/prefill-0 container engine"]
    engine = sources[1].values
    assert engine["NCCL_IB_SL"].value == "1" and engine["NCCL_IB_SL"].line == 11 and engine["MC_IB_SL"].value is None


def test_json_pod_list_is_read_too(tmp_path):
    path = tmp_path / "pods.json"
    path.write_text('{"kind": "List", "items": [{"kind": "Job", "metadata": {"name": "j"}, "spec": {"template": '
                    '{"spec": {"containers": [{"name": "c", "env": [{"name": "NCCL_IB_SL", "value": "2"}]}]}}}}]}')
    (source,) = load_pod_envs(path)
    assert "Job/j container c" in source.label and source.values["NCCL_IB_SL"].value == "2"


def test_a_container_missing_a_knob_is_caught_even_if_another_sets_it(tmp_path):
    path = tmp_path / "pod.yaml"
    path.write_text(POD.replace("MC_IB_SL\n          valueFrom: {secretKeyRef: {name: s, key: k}}", 'MC_IB_SL\n'
                                '          value: "2"'))
    plan = with_sources(load_traffic(example()["traffic"]), pod_paths=[path])
    result = check_library_settings(plan)
    assert result.status is Status.VIOLATED and "container setup" in result.witness
    assert "{name: " in result.fix and "container setup" in result.fix


def test_value_from_a_secret_is_unknown_not_guessed(tmp_path):
    path = tmp_path / "pod.yaml"
    path.write_text(POD.replace("  initContainers:\n    - name: setup\n      env: []\n", "").replace(
        '{name: NCCL_IB_SL, value: "1"}', '{name: NCCL_IB_SL, value: "1"}\n        - {name: NVSHMEM_IB_SL, value: '
        '"0"}\n        - {name: UCX_IB_SL, value: "2"}'))
    result = check_library_settings(with_sources(load_traffic(example()["traffic"]), pod_paths=[path]))
    assert result.status is Status.UNKNOWN and "valueFrom" in result.detail


def test_env_flag_replaces_the_plan_env_file(tmp_path):
    env = tmp_path / "run.env"
    env.write_text(example()["env"].read_text().replace("NCCL_IB_SL=1", "NCCL_IB_SL=3"))
    plan = with_sources(load_traffic(example()["traffic"]), env_paths=[env])
    assert plan.envs == (env_source(env),) and plan.env_path == str(env)
    result = check_library_settings(plan)
    assert result.status is Status.VIOLATED and "NCCL_IB_SL=3" in result.witness and f"{env}:3" in result.fix


@pytest.mark.parametrize("text, fragment, line", [
    ("kind: Pod\nspec:\n  containers:\n    - name: c\n      env:\n        - {name: NCCL_IB_SL, value: x}\n",
     "0..15", 6),
    ("kind: Pod\nspec: {}\n", "no pod spec", 1),
    ("kind: Pod\nspec: [\n", "invalid YAML", 3),
])
def test_bad_pod_specs_name_file_and_line(tmp_path, text, fragment, line):
    from dualpath.errors import SpecError

    path = tmp_path / "pod.yaml"
    path.write_text(text)
    with pytest.raises((InputError, SpecError)) as info:
        with_sources(load_traffic(example()["traffic"]), pod_paths=[path])
    assert fragment in str(info.value) and info.value.line == line and str(path) in str(info.value)
