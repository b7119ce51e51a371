"""vLLM and SGLang parallel sizes in cluster files give the PE and DE group sizes."""

import pytest

from dualpath.errors import SpecError
from dualpath.models.cluster_file import cluster_from_text

BASE = "prefill_nodes = 2\ndecode_nodes = 4\n"


def test_sglang_and_vllm_names():
    cluster = cluster_from_text(BASE + "[prefill]\ntp_size = 16\ndp_size = 16\nenable_dp_attention = true\n"
                                "ep_size = 16\n[decode]\ntensor_parallel_size = 1\ndata_parallel_size = 32\n"
                                "enable_expert_parallel = true\n", "c.toml")
    assert (cluster.pe_group_gpus, cluster.de_group_gpus) == (16, 32)


@pytest.mark.parametrize("text,line,field", [
    ("[prefill]\ntp_size = 8\n", 4, "prefill.tp_size"),  # TP attention engine: not one GPU
    ("[prefill]\ntp_size = 16\ndp_size = 16\nenable_dp_attention = true\nep_size = 8\n", 7, "prefill.ep_size"),
    ("[decode]\ntp_size = 8\ntensor_parallel_size = 1\n", 4, "decode.tp_size"),
    ("[decode]\ndata_parallel_size = 0\n", 4, "decode.data_parallel_size"),
    ("[decode]\npipeline_parallel_size = 2\n", 4, "decode.pipeline_parallel_size"),
    ("pe_group_gpus = 8\n[prefill]\ndata_parallel_size = 16\n", 3, "pe_group_gpus"),
    ("[prefill]\ndata_parallel_size = 3\n", 4, "pe_group_gpus"),  # not a divisor of 16 PE GPUs
])
def test_errors_point_at_the_key(text, line, field):
    with pytest.raises(SpecError) as info:
        cluster_from_text(BASE + text, "c.toml")
    assert (info.value.field, info.value.line) == (field, line)
