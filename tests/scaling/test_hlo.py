"""Collective parsing on hand-written HLO with known shapes (bytes worked out by hand)."""
from jaxaudio.scaling import hlo

MODULE = (
    """\
HloModule jit_step, entry_computation_layout={(f32[8,16]{1,0})->f32[8,16]{1,0}}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

%body (p: (s32[], f32[4,16])) -> (s32[], f32[4,16]) {
  %p = (s32[], f32[4,16]{1,0}) parameter(0)
  %x = f32[4,16]{1,0} get-tuple-element(%p), index=1
"""
    "  %ar.loop = f32[4,16]{1,0} all-reduce(%x), channel_id=7, replica_groups=[2,4]<=[8], "
    "use_global_device_ids=true, to_apply=%add\n"
    """\
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %t = (s32[], f32[4,16]{1,0}) tuple(%i, %ar.loop)
}

%cond (p: (s32[], f32[4,16])) -> pred[] {
  %p = (s32[], f32[4,16]{1,0}) parameter(0)
  ROOT %c = pred[] constant(true)
}

%inner_body (q: (s32[], bf16[2])) -> (s32[], bf16[2]) {
  %q = (s32[], bf16[2]{0}) parameter(0)
  %y = bf16[2]{0} get-tuple-element(%q), index=1
  %cp = bf16[2]{0} collective-permute(%y), channel_id=9, source_target_pairs={{0,1},{1,0}}
  %j = s32[] get-tuple-element(%q), index=0
  ROOT %u = (s32[], bf16[2]{0}) tuple(%j, %cp)
}

%outer_body (p: (s32[], bf16[2])) -> (s32[], bf16[2]) {
  %p = (s32[], bf16[2]{0}) parameter(0)
"""
    '  ROOT %w = (s32[], bf16[2]{0}) while(%p), condition=%cond, body=%inner_body, '
    'backend_config={"known_trip_count":{"n":"5"}}\n'
    """\
}

%mystery_body (p: (s32[], f32[3])) -> (s32[], f32[3]) {
  %p = (s32[], f32[3]{0}) parameter(0)
  %z = f32[3]{0} get-tuple-element(%p), index=1
  %ag.mystery = f32[3]{0} all-gather(%z), channel_id=11, replica_groups={{0},{1}}, dimensions={0}
  %k = s32[] get-tuple-element(%p), index=0
  ROOT %v = (s32[], f32[3]{0}) tuple(%k, %ag.mystery)
}

ENTRY %main (arg: f32[8,16]) -> f32[8,16] {
  %arg = f32[8,16]{1,0} parameter(0)
"""
    "  %ar = (f32[8,16]{1,0}, f32[], bf16[3,5]{1,0}) all-reduce(%arg, %arg, %arg), channel_id=1, "
    "replica_groups={{0,1,2,3},{4,5,6,7}}, use_global_device_ids=true, to_apply=%add\n"
    "  %ags = (f32[2,16]{1,0}, f32[8,16]{1,0}) all-gather-start(%arg), channel_id=2, "
    "replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_1'}, dimensions={0}, use_global_device_ids=true\n"
    """\
  %agd = f32[8,16]{1,0} all-gather-done(%ags)
  %rs = f32[2,16]{1,0} reduce-scatter(%arg), channel_id=3, replica_groups=[2,4]<=[8], dimensions={0}, to_apply=%add
  %a2a = (s8[4,4]{1,0}, s8[4,4]{1,0}) all-to-all(%arg, %arg), channel_id=4, replica_groups={{0,1}}
"""
    '  %loop = (s32[], f32[4,16]{1,0}) while(%arg), condition=%cond, body=%body, '
    'backend_config={"known_trip_count":{"n":"12"},"other":1}\n'
    '  %nested = (s32[], bf16[2]{0}) while(%arg), condition=%cond, body=%outer_body, '
    'backend_config={"known_trip_count":{"n":"3"}}\n'
    """\
  %unknown = (s32[], f32[3]{0}) while(%arg), condition=%cond, body=%mystery_body
  ROOT %r = f32[8,16]{1,0} copy(%agd)
}
"""
)


def _by_name():
    return {op.name: op for op in hlo.parse_collectives(MODULE)}


def test_shape_bytes_of_arrays_and_tuples():
    assert hlo.shape_bytes("f32[8,16]{1,0}") == 512
    assert hlo.shape_bytes("f32[]") == 4
    assert hlo.shape_bytes("(f32[8,16]{1,0}, f32[], bf16[3,5]{1,0})") == 512 + 4 + 30
    assert hlo.shape_bytes("(pred[7], s8[2,2], f64[1], c64[2])") == 7 + 4 + 8 + 16
    assert hlo.array_bytes("(f32[2]{0}, /*index=5*/u32[1,2]{1,0})") == [8, 8]


def test_every_collective_is_found_once():
    ops = hlo.parse_collectives(MODULE)
    names = sorted(op.name for op in ops)
    # the async pair counts once (from the -done), the -start never
    assert names == sorted(["ar", "agd", "rs", "a2a", "ar.loop", "cp", "ag.mystery"])


def test_tuple_all_reduce_keeps_each_array():
    op = _by_name()["ar"]
    assert op.kind == "all-reduce" and op.elements == (512, 4, 30) and op.count == 1
    assert op.group_size == 4


def test_async_all_gather_counts_the_gathered_result():
    op = _by_name()["agd"]
    assert op.kind == "all-gather"
    assert op.elements == (512,)  # f32[8,16], not the start's (operand, result) tuple
    assert op.group_size == 4  # mesh spelling: axis_1 has 4 devices


def test_reduce_scatter_counts_its_input():
    op = _by_name()["rs"]
    assert op.elements == (2 * 16 * 4 * 4,)  # result f32[2,16] x 4 devices
    assert op.group_size == 4  # iota spelling [2,4]


def test_loops_multiply_by_trip_count_and_nest():
    ops = _by_name()
    assert ops["ar.loop"].count == 12 and ops["ar.loop"].total_bytes == 12 * 256
    assert ops["cp"].count == 15 and ops["cp"].elements == (4,)  # 3 outer x 5 inner, bf16[2]
    assert ops["ag.mystery"].count == 1 and ops["ag.mystery"].unknown_trip_count
    assert not ops["ar.loop"].unknown_trip_count


def test_bytes_by_kind_and_small_array_filter():
    ops = hlo.parse_collectives(MODULE)
    totals = hlo.bytes_by_kind(ops)
    assert totals == {
        "all-reduce": 546 + 12 * 256,
        "all-gather": 512 + 12,
        "reduce-scatter": 512,
        "all-to-all": 32,
        "collective-permute": 15 * 4,
    }
    large = hlo.bytes_by_kind(ops, min_element_bytes=100)
    assert large["all-reduce"] == 512 + 12 * 256  # the f32[] and bf16[3,5] members are left out
    assert large["all-to-all"] == 0 and large["collective-permute"] == 0
