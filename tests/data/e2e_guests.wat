;; Guests for the end-to-end tests (tests/test_e2e_*.py): one export per
;; scenario, each reached through a named caller so a backtrace has more than
;; one wasm frame.  Assembled at test time with wasmtime.wat2wasm; the $names
;; become the name section, which the stub's debug images use as symbols.
(module
  (memory 1)

  ;; Runs forever: the Ctrl-C test interrupts it.  The counter in a global makes
  ;; the loop body more than a bare branch (a stop lands on one of its sites).
  (global $spins (mut i32) (i32.const 0))
  (func $spin_forever (export "spin_forever") (result i32)
    (loop $again
      (global.set $spins (i32.add (global.get $spins) (i32.const 1)))
      (br $again))
    (unreachable))
  (func $spin (export "spin") (result i32)
    (call $spin_forever))

  ;; T04 SIGILL: `unreachable`.
  (func $hit_unreachable (param $x i32) (result i32)
    (if (i32.eqz (local.get $x)) (then (unreachable)))
    (local.get $x))
  (func $trap_unreachable (export "trap_unreachable") (param $x i32) (result i32)
    (i32.add (call $hit_unreachable (local.get $x)) (i32.const 1)))

  ;; T08 SIGFPE: integer division by zero.
  (func $divide (param $a i32) (param $b i32) (result i32)
    (i32.div_s (local.get $a) (local.get $b)))
  (func $trap_div (export "trap_div") (param $a i32) (param $b i32) (result i32)
    (i32.add (call $divide (local.get $a) (local.get $b)) (i32.const 1)))

  ;; T08 SIGFPE: float -> int conversion of NaN ("invalid conversion to integer").
  (func $to_int (param $f f64) (result i32)
    (i32.trunc_f64_s (local.get $f)))
  (func $trap_convert (export "trap_convert") (result i32)
    (call $to_int (f64.div (f64.const 0) (f64.const 0))))

  ;; T0b SIGSEGV: a load past the end of linear memory.
  (func $load_at (param $address i32) (result i32)
    (i32.load (local.get $address)))
  (func $trap_oob (export "trap_oob") (param $address i32) (result i32)
    (call $load_at (local.get $address)))

  ;; T0b SIGSEGV: call stack exhausted by unbounded recursion.
  (func $recurse (param $n i32) (result i32)
    (i32.add (call $recurse (i32.add (local.get $n) (i32.const 1))) (i32.const 1)))
  (func $trap_stack (export "trap_stack") (result i32)
    (call $recurse (i32.const 0)))
)
