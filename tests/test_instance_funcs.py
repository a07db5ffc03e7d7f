"""An instance's function index space: funcref records made in one array at
instantiation, Func objects made on first use (codemem.runtime._InstanceFuncs)."""
import pytest
import wasmtime

import codemem

WAT = """
(module
  (import "env" "host" (func $host (param i32) (result i32)))
  (table (export "table") 3 funcref)
  (elem (i32.const 0) $host $double $triple)
  (func $double (export "double") (param i32) (result i32) local.get 0 i32.const 2 i32.mul)
  (func $triple (param i32) (result i32) local.get 0 i32.const 3 i32.mul)
  (func (export "call_at") (param i32 i32) (result i32)
    local.get 1
    local.get 0
    call_indirect (param i32) (result i32))
  (func (export "ref_triple") (result funcref) ref.func $triple))
"""


@pytest.fixture(params=[False, True], ids=["nodebug", "debug"])
def instance(request):
    engine = codemem.Engine(debug=request.param)
    module = codemem.Module(engine, wasmtime.wat2wasm(WAT))
    store = codemem.Store(engine)
    host = codemem.Func(store, codemem.FuncType([codemem.ValType.I32], [codemem.ValType.I32]), lambda x: x + 100)
    yield codemem.Instance(store, module, [host]), host
    store.close()


def test_wasm_functions_are_made_on_first_use_and_stay_the_same_object(instance):
    inst, host = instance
    funcs = inst.funcs
    assert len(funcs) == 5 and funcs[0] is host
    assert funcs._made == {}  # nothing asked for yet: no Func made at instantiation
    double = inst.exports["double"]  # the exports are made, the rest not
    assert double is funcs[1] is funcs[-4] and set(funcs._made) == {1, 3, 4}
    assert double(21) == 42
    assert funcs[1:3] == [double, funcs[2]]
    with pytest.raises(IndexError):
        funcs[5]
    with pytest.raises(IndexError):
        funcs.funcref_address(-1)


def test_funcrefs_from_tables_and_ref_func_come_back_as_the_functions(instance):
    inst, host = instance
    table = inst.exports["table"]
    assert table.get(0) is host
    assert 2 not in inst.funcs._made
    triple = table.get(2)
    assert triple is inst.funcs[2] and triple(5) == 15  # made from its funcref record
    assert inst.exports["ref_triple"]() is triple
    assert table.get(1) is inst.exports["double"]
    call_at = inst.exports["call_at"]
    assert [call_at(i, 7) for i in range(3)] == [107, 14, 21]
    # Every record sits where the instance context and the table point.
    assert all(inst.funcs.funcref_address(i) == inst.funcs[i]._funcref_address for i in range(len(inst.funcs)))
