;; Opens FIFOs relative to directories it opened itself, not to the preopen (descriptor 3).
;; Expects beneath the preopen: sub/fifo (a FIFO), sub/f2 (a regular file), sub/ok.txt, and
;; sub/inner/f2 (a FIFO). Prints one line per step, `NAME ERRNO`, where 0 is success and 2 is
;; EACCES; a FIFO that were opened would block for ever instead.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_renumber" (func $renumber (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "sub")
  (data (i32.const 110) "fifo")
  (data (i32.const 120) "ok.txt")
  (data (i32.const 130) "inner")
  (data (i32.const 140) "f2")
  ;; Line templates, 16 bytes each, the errno digit at offset 14: "name         X\n".
  (data (i32.const 200) "sub/fifo      ?\n")
  (data (i32.const 216) "sub/ok.txt    ?\n")
  (data (i32.const 232) "inner/f2      ?\n")
  (data (i32.const 248) "renumber      ?\n")
  (data (i32.const 264) "renumbered/f2 ?\n")

  ;; Prints the template at $line with $errno (0..9) as its digit.
  (func $say (param $line i32) (param $errno i32)
    (i32.store8 (i32.add (local.get $line) (i32.const 14))
      (i32.add (i32.const 48) (local.get $errno)))
    (i32.store (i32.const 0) (local.get $line))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  ;; path_open(dir, path, len, oflags) -> errno; the new descriptor at address 8.
  (func $at (param $dir i32) (param $path i32) (param $len i32) (param $oflags i32) (result i32)
    (call $open (local.get $dir) (i32.const 1) (local.get $path) (local.get $len)
      (local.get $oflags) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 8)))

  (func (export "_start") (local $sub i32) (local $inner i32)
    ;; sub, opened as a directory (oflags 2) beneath the preopen.
    (if (call $at (i32.const 3) (i32.const 100) (i32.const 3) (i32.const 2)) (then unreachable))
    (local.set $sub (i32.load (i32.const 8)))
    (call $say (i32.const 200) (call $at (local.get $sub) (i32.const 110) (i32.const 4) (i32.const 0)))
    (call $say (i32.const 216) (call $at (local.get $sub) (i32.const 120) (i32.const 6) (i32.const 0)))
    ;; inner, opened beneath sub.
    (if (call $at (local.get $sub) (i32.const 130) (i32.const 5) (i32.const 2)) (then unreachable))
    (local.set $inner (i32.load (i32.const 8)))
    (call $say (i32.const 232) (call $at (local.get $inner) (i32.const 140) (i32.const 2) (i32.const 0)))
    ;; inner takes sub's number: f2 beneath that number is now inner's FIFO, not sub's file.
    (call $say (i32.const 248) (call $renumber (local.get $inner) (local.get $sub)))
    (call $say (i32.const 264) (call $at (local.get $sub) (i32.const 140) (i32.const 2) (i32.const 0)))))
