;; Grows its memory by a page at a time, spinning between growths, until a growth fails.
(module (memory (export "memory") 1)
  (func (export "_start") (local $i i32)
    (loop $grow
      (drop (memory.grow (i32.const 1)))
      (local.set $i (i32.const 0))
      (loop $spin
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $spin (i32.lt_u (local.get $i) (i32.const 1000000))))
      (br $grow))))
