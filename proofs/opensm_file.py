"""The line syntax of OpenSM's options file, and the refusal of a file that is not one.

osm_subnet.c osm_subn_parse_conf_file reads each line with fgets, takes the first token (delimiters
space, tab, newline) as the key and the rest of the line, through clean_val (leading/trailing blanks
and one pair of surrounding quotes removed), as the value; a key that is no option is skipped without
a word. So a file of some other format is "read" by OpenSM as all defaults: we refuse it instead.
"""

from __future__ import annotations

import re

from dualpath.errors import InputError, shown

# osm_subnet.c opt_tbl (the option names OpenSM knows), the ones a QoS/fabric reader meets; any one of
# them on a line is enough to call the file an options file.
_OPTION_NAMES = """
guid m_key sm_key sa_key subnet_prefix m_key_lease_period m_key_protection_level m_key_lookup
sweep_interval max_wire_smps max_wire_smps2 max_smps_timeout console console_port transaction_timeout
transaction_retries long_transaction_timeout max_msg_fifo_timeout sm_priority lmc lmc_esp0 max_op_vls
force_link_speed force_link_speed_ext force_link_width reassign_lids ignore_other_sm single_thread
disable_multicast subnet_timeout packet_life_time vl_stall_count leaf_vl_stall_count
head_of_queue_lifetime leaf_head_of_queue_lifetime local_phy_errors_threshold overrun_errors_threshold
use_mfttop sminfo_polling_timeout polling_retry_number force_heavy_sweep port_prof_ignore_file
hop_weights_file port_search_ordering_file port_profile_switch_nodes sweep_on_trap routing_engine
avoid_throttled_links connect_roots use_ucast_cache log_file log_max_size log_flags force_log_flush
accum_log_file partition_config_file no_partition_enforcement part_enforce allow_both_pkeys
keep_pkey_indexes qos qos_policy_file suppress_sl2vl_mad_status_errors dump_files_dir
lid_matrix_dump_file lfts_file root_guid_file cn_guid_file io_guid_file port_shifting scatter_ports
max_reverse_hops ids_guid_file guid_routing_order_file guid_routing_order_no_scatter sa_db_file
sa_db_dump do_mesh_analysis exit_on_fatal honor_guid2lid_file daemon sm_inactive babbling_port_policy
drop_event_subscriptions ipoib_mcast_recreate use_optimized_slvl fsync_high_avail_files
perfmgr perfmgr_redir perfmgr_sweep_time_s perfmgr_max_outstanding_queries perfmgr_ignore_cas
event_db_dump_file perfmgr_rm_nodes perfmgr_log_errors perfmgr_query_cpi perfmgr_xmit_wait_log
perfmgr_xmit_wait_threshold event_plugin_name event_plugin_options node_name_map_name
enable_quirks no_clients_rereg prefix_routes_file consolidate_ipv6_snm_req lash_start_vl sm_sl
log_prefix per_module_logging_file torus_config nue_max_num_vls
"""
_QOS_FIELDS = ("max_vls", "high_limit", "vlarb_high", "vlarb_low", "sl2vl")
KNOWN_OPTIONS = frozenset(_OPTION_NAMES.split()) | {
    f"qos{t}_{f}" for t in ("", "_ca", "_sw0", "_swe", "_rtr") for f in _QOS_FIELDS}
OLD_OPTIONS = frozenset({"no_qos"})  # OpenSM 3.0's options file; current opt_tbl no longer has them
C_BLANK = " \t\n\v\f\r"
FGETS_CHARS = 1022  # fgets(line, 1023, ...): a longer line is read as two lines


def split_line(line: str) -> tuple[str, str] | None:
    """(key, value) as osm_subn_parse_conf_file sees the line, or None for a blank line."""
    stripped = line.lstrip(" \t\n")
    if not stripped:
        return None
    cut = next((i for i, ch in enumerate(stripped) if ch in " \t\n"), len(stripped))
    key, rest = stripped[:cut], stripped[cut + 1:]
    value = rest.strip(C_BLANK)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]  # clean_val drops one pair of quotes
    return key, value


_POLICY = re.compile(r"^\s*(qos-ulps|qos-levels|qos-match-rules|port-groups|qos-setup)\b")
_PER_SL = re.compile(r"^\s*(sl\s*[-_]?\s*)?\d+\s*([:=,]|\s)", re.IGNORECASE)


def _looks_like(lines: list[str]) -> str:
    if any(_POLICY.match(s) for s in lines):
        return "an OpenSM QoS policy file (qos_policy_file), not the options file"
    if any(s.lstrip().startswith("[") for s in lines):
        return "an INI/TOML file with [sections]"
    if sum(bool(_PER_SL.match(s)) for s in lines) * 2 >= len(lines):
        return ("a per-SL table (each line starts with an SL number), such as a fabric manager's per-SL "
                "rate-limit file")
    if any("=" in s for s in lines):
        return "a KEY=VALUE file (OpenSM options are written `key value`)"
    if any(re.match(r"^\s*[\w.-]+\s*:", s) for s in lines):
        return "a YAML or `key: value` file"
    return "some other format"


def refuse_if_foreign(path: str, text: str) -> None:
    """Raise InputError when no line of a non-empty file sets an OpenSM option."""
    content: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        parsed = split_line(line)
        if parsed is None or parsed[0].startswith("#"):
            continue
        key = parsed[0]
        if key in KNOWN_OPTIONS or key in OLD_OPTIONS or key.startswith("qos_"):
            return
        content.append((number, line))
    if not content:
        return  # comments only: OpenSM runs with every default, and so do we
    first, sample = content[0]
    raise InputError(path, f"not an OpenSM options file: none of its {len(content)} setting line(s) names an "
                           f"OpenSM option; it looks like {_looks_like([s for _, s in content])} "
                           f"(line {first}: {shown(sample.strip()[:60])})", first)
