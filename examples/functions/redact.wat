;; A filter (docs/functions.md) that removes the header attributes its config names and passes the body as it is:
;; attached as 'PATTERN=redact.wasm?drop=tenant,secret', a message's `tenant` and `secret` attributes never leave
;; the node. The config is kept at 0x1000 (at most 4096 bytes); input, config and attribute lines alike, at 0x2000.
(module
  (memory (export "memory") 1)
  (global $list (mut i32) (i32.const 0x1000))  ;; the comma-separated names after "drop="
  (global $listLength (mut i32) (i32.const 0))
  (global (export "resumable") i32 (i32.const 1))
  (func (export "freight_abi_v1"))

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

  ;; Room for the input and, after it, as much again for rewritten attribute lines.
  (func (export "input") (param $length i32) (result i32)
    (call $ensure (i32.add (i32.const 0x2000) (i32.shl (local.get $length) (i32.const 1))))
    (i32.const 0x2000))

  ;; The config must be "drop=NAME[,NAME...]" (or empty: nothing dropped); anything else is refused (code 22).
  (func (export "begin") (param $length i64) (param $config i32) (param $configLength i32) (result i64)
    (global.set $listLength (i32.const 0))
    (if (i32.eqz (local.get $configLength)) (then (return (local.get $length))))
    (if (i32.or
          (i32.lt_u (local.get $configLength) (i32.const 5))
          (i32.or (i32.gt_u (local.get $configLength) (i32.const 4096))
            (i32.ne (i32.load (local.get $config)) (i32.const 0x706f7264))))  ;; "drop" little-endian
      (then (return (i64.const -22))))
    (if (i32.ne (i32.load8_u offset=4 (local.get $config)) (i32.const 61))  ;; '='
      (then (return (i64.const -22))))
    (global.set $listLength (i32.sub (local.get $configLength) (i32.const 5)))
    (memory.copy (global.get $list) (i32.add (local.get $config) (i32.const 5)) (global.get $listLength))
    (local.get $length))

  ;; Whether [a, a + n) and [b, b + m) hold the same bytes.
  (func $same (param $a i32) (param $n i32) (param $b i32) (param $m i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $n) (local.get $m)) (then (return (i32.const 0))))
    (block $differ
      (loop $next
        (if (i32.ge_u (local.get $i) (local.get $n)) (then (return (i32.const 1))))
        (br_if $differ
          (i32.ne
            (i32.load8_u (i32.add (local.get $a) (local.get $i)))
            (i32.load8_u (i32.add (local.get $b) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; Whether the key [k, k + n) is one of the names to drop.
  (func $dropped (param $k i32) (param $n i32) (result i32)
    (local $at i32) (local $end i32) (local $start i32)
    (local.set $at (global.get $list))
    (local.set $end (i32.add (global.get $list) (global.get $listLength)))
    (local.set $start (local.get $at))
    (block $none
      (loop $next
        (if (i32.or
              (i32.ge_u (local.get $at) (local.get $end))
              (i32.eq (i32.load8_u (local.get $at)) (i32.const 44)))  ;; ','
          (then
            (if (call $same (local.get $start) (i32.sub (local.get $at) (local.get $start)) (local.get $k) (local.get $n))
              (then (return (i32.const 1))))
            (br_if $none (i32.ge_u (local.get $at) (local.get $end)))
            (local.set $start (i32.add (local.get $at) (i32.const 1)))))
        (local.set $at (i32.add (local.get $at) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; "key=value\n" lines in; the lines whose key is not dropped out, right after the input.
  (func (export "attributes") (param $lines i32) (param $length i32) (result i64)
    (local $at i32) (local $end i32) (local $line i32) (local $equals i32) (local $out i32) (local $target i32)
    (local.set $at (local.get $lines))
    (local.set $end (i32.add (local.get $lines) (local.get $length)))
    (local.set $out (local.get $end))
    (local.set $target (local.get $out))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $line (local.get $at))
        (local.set $equals (i32.const 0))
        ;; to the end of the line, noting its first '='
        (block $eol
          (loop $scan
            (br_if $eol (i32.ge_u (local.get $at) (local.get $end)))
            (br_if $eol (i32.eq (i32.load8_u (local.get $at)) (i32.const 10)))
            (if (i32.and (i32.eqz (local.get $equals)) (i32.eq (i32.load8_u (local.get $at)) (i32.const 61)))
              (then (local.set $equals (local.get $at))))
            (local.set $at (i32.add (local.get $at) (i32.const 1)))
            (br $scan)))
        (if (i32.eqz (local.get $equals)) (then (local.set $equals (local.get $at))))
        (if (i32.eqz (call $dropped (local.get $line) (i32.sub (local.get $equals) (local.get $line))))
          (then
            (memory.copy (local.get $target) (local.get $line) (i32.sub (local.get $at) (local.get $line)))
            (local.set $target (i32.add (local.get $target) (i32.sub (local.get $at) (local.get $line))))
            (i32.store8 (local.get $target) (i32.const 10))
            (local.set $target (i32.add (local.get $target) (i32.const 1)))))
        (local.set $at (i32.add (local.get $at) (i32.const 1)))
        (br $each)))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
      (i64.extend_i32_u (i32.sub (local.get $target) (local.get $out)))))

  ;; The body passes as it is: the output is the input.
  (func (export "chunk") (param $length i32) (result i64)
    (i64.or (i64.shl (i64.const 0x2000) (i64.const 32)) (i64.extend_i32_u (local.get $length))))

  (func (export "end") (result i64) (i64.const 0)))
