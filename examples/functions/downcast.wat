;; fp32 -> bf16 (docs/functions.md): each little-endian IEEE 754 binary32 of the body becomes the bfloat16 of its
;; upper 16 bits, rounded to nearest with ties to even; a NaN stays a NaN (made quiet). The output is half the
;; input. A body that is not a whole number of floats is refused (code 22). Chunks need not be whole floats: up to
;; three bytes wait for the next chunk just before the input area, which is why the module keeps that state; with
;; chunks of a multiple of 4 bytes (Freight's are) nothing is carried, so it declares itself resumable.
(module
  (memory (export "memory") 1)
  ;; Bytes left over from the last chunk, kept at [8 - carry, 8).
  (global $carry (mut i32) (i32.const 0))
  (global (export "resumable") i32 (i32.const 1))
  (func (export "freight_abi_v1"))

  (func (export "begin") (param $length i64) (param $config i32) (param $configLength i32) (result i64)
    (global.set $carry (i32.const 0))
    (if (i64.ne (i64.and (local.get $length) (i64.const 3)) (i64.const 0))
      (then (return (i64.const -22))))
    (i64.shr_u (local.get $length) (i64.const 1)))

  ;; Grows memory to at least $bytes, or traps.
  (func $ensure (param $bytes i32)
    (local $have i32)
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $bytes) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow
                (i32.shr_u (i32.add (i32.sub (local.get $bytes) (local.get $have)) (i32.const 65535)) (i32.const 16)))
              (i32.const -1))
          (then unreachable)))))

  ;; Input at 8; output after it (8-aligned), half its size plus the carry.
  (func (export "input") (param $length i32) (result i32)
    (call $ensure
      (i32.add (i32.add (i32.const 24) (local.get $length)) (i32.shr_u (i32.add (local.get $length) (i32.const 4)) (i32.const 1))))
    (i32.const 8))

  (func (export "chunk") (param $length i32) (result i64)
    (local $source i32) (local $end i32) (local $out i32) (local $target i32) (local $bits i32) (local $rest i32)
    (local.set $source (i32.sub (i32.const 8) (global.get $carry)))
    (local.set $end (i32.add (i32.const 8) (local.get $length)))
    (local.set $out (i32.and (i32.add (local.get $end) (i32.const 15)) (i32.const -8)))
    (local.set $target (local.get $out))
    (block $done
      (loop $next
        (br_if $done (i32.gt_u (i32.add (local.get $source) (i32.const 4)) (local.get $end)))
        (local.set $bits (i32.load (local.get $source)))
        (if (i32.gt_u (i32.and (local.get $bits) (i32.const 0x7fffffff)) (i32.const 0x7f800000))
          (then
            (i32.store16 (local.get $target) (i32.or (i32.shr_u (local.get $bits) (i32.const 16)) (i32.const 0x40))))
          (else
            (i32.store16 (local.get $target)
              (i32.shr_u
                (i32.add (local.get $bits)
                  (i32.add (i32.const 0x7fff) (i32.and (i32.shr_u (local.get $bits) (i32.const 16)) (i32.const 1))))
                (i32.const 16)))))
        (local.set $source (i32.add (local.get $source) (i32.const 4)))
        (local.set $target (i32.add (local.get $target) (i32.const 2)))
        (br $next)))
    (local.set $rest (i32.sub (local.get $end) (local.get $source)))
    (memory.copy (i32.sub (i32.const 8) (local.get $rest)) (local.get $source) (local.get $rest))
    (global.set $carry (local.get $rest))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
      (i64.extend_i32_u (i32.sub (local.get $target) (local.get $out)))))

  (func (export "end") (result i64)
    (if (i32.ne (global.get $carry) (i32.const 0)) (then (return (i64.const -22))))
    (i64.const 0)))
