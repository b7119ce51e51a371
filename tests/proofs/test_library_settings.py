"""Library SL settings against the plan: env file, plan value, unset default."""

from dualpath.proofs.example_files import example, variant
from dualpath.proofs.library_settings import check_library_settings
from dualpath.proofs.result import Status
from dualpath.proofs.traffic import load_traffic


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
