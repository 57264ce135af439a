;; Prints `.` forever, spinning between dots.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) ".")
  (func (export "_start") (local $i i32)
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 1))
    (loop $forever
      (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.const 0))
      (loop $spin
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $spin (i32.lt_u (local.get $i) (i32.const 2000000))))
      (br $forever))))
