;; The smallest filter (docs/functions.md): every chunk passes as it is. What it costs per chunk is what any filter
;; costs before it does any work: the host writes the chunk into the module's memory and reads the output back
;; (`freight bench --paths functions`). The input goes at 0x10000, after a page kept free; memory grows to fit.
(module
  (memory (export "memory") 2)
  (global (export "resumable") i32 (i32.const 1))
  (func (export "freight_abi_v1"))

  (func (export "begin") (param $length i64) (param $config i32) (param $configLength i32) (result i64)
    (local.get $length))

  (func (export "input") (param $length i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.shr_u (i32.add (i32.add (local.get $length) (i32.const 0x10000)) (i32.const 0xffff)) (i32.const 16)))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $need) (memory.size))) (i32.const -1))
          (then unreachable))))
    (i32.const 0x10000))

  (func (export "chunk") (param $length i32) (result i64)
    (i64.or (i64.shl (i64.const 0x10000) (i64.const 32)) (i64.extend_i32_u (local.get $length))))

  (func (export "end") (result i64) (i64.const 0)))
