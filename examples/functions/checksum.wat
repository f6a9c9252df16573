;; A function endpoint (docs/functions.md): answers a message with the CRC32C (Castagnoli, the checksum Freight's
;; chunks carry) of its body, 4 bytes little-endian. Bit by bit, so it needs no table.
(module
  (memory (export "memory") 1)
  (global $crc (mut i32) (i32.const -1))
  (func (export "freight_abi_v1"))

  (func (export "begin") (param $length i64) (param $config i32) (param $configLength i32) (result i64)
    (global.set $crc (i32.const -1))
    (i64.const 4))

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

  (func (export "input") (param $length i32) (result i32)
    (call $ensure (i32.add (i32.const 16) (local.get $length)))
    (i32.const 16))

  (func (export "chunk") (param $length i32) (result i64)
    (local $at i32) (local $end i32) (local $crc i32) (local $bit i32)
    (local.set $crc (global.get $crc))
    (local.set $at (i32.const 16))
    (local.set $end (i32.add (i32.const 16) (local.get $length)))
    (block $done
      (loop $byte
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $crc (i32.xor (local.get $crc) (i32.load8_u (local.get $at))))
        (local.set $bit (i32.const 8))
        (loop $bits
          (local.set $crc
            (i32.xor
              (i32.shr_u (local.get $crc) (i32.const 1))
              (i32.and (i32.const 0x82f63b78) (i32.sub (i32.const 0) (i32.and (local.get $crc) (i32.const 1))))))
          (local.set $bit (i32.sub (local.get $bit) (i32.const 1)))
          (br_if $bits (local.get $bit)))
        (local.set $at (i32.add (local.get $at) (i32.const 1)))
        (br $byte)))
    (global.set $crc (local.get $crc))
    (i64.const 0))

  ;; The checksum at 0: ptr 0, 4 bytes.
  (func (export "end") (result i64)
    (i32.store (i32.const 0) (i32.xor (global.get $crc) (i32.const -1)))
    (i64.const 4)))
