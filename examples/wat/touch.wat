;; Grows its memory by 64 MiB, a mebibyte at a time, writing to every 4 KiB page of it (each first
;; write is a page fault: kernel time on the thread running it); then counts to 2^30 (user time)
;; and returns.
(module (memory (export "memory") 1)
  (func (export "_start") (local $page i32) (local $end i32) (local $left i32)
    (local.set $left (i32.const 64))
    (loop $grow
      (drop (memory.grow (i32.const 16)))
      (local.set $end (i32.mul (memory.size) (i32.const 65536)))
      (local.set $page (i32.sub (local.get $end) (i32.const 1048576)))
      (loop $touch
        (i32.store8 (local.get $page) (i32.const 1))
        (local.set $page (i32.add (local.get $page) (i32.const 4096)))
        (br_if $touch (i32.lt_u (local.get $page) (local.get $end))))
      (local.set $left (i32.sub (local.get $left) (i32.const 1)))
      (br_if $grow (local.get $left)))
    (local.set $left (i32.const 0x40000000))
    (loop $spin
      (local.set $left (i32.sub (local.get $left) (i32.const 1)))
      (br_if $spin (local.get $left)))))
