;; Tries to make the host allocate for it: accepts a connection on its pre-opened listener
;; (descriptor 1<<24), sends 50 iovecs that all point at one 24 MiB buffer, prints `sent`, then
;; calls poll_oneoff with 2^32-1 subscriptions and prints `poll-einval` when that is refused, and
;; waits for the client to close the connection.
(module
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send" (func $send (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv" (func $recv (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 400)
  (data (i32.const 2048) "sent\n")
  (data (i32.const 2064) "poll-einval\n")
  (data (i32.const 2080) "poll-other\n")
  (func $print (param $at i32) (param $len i32)
    (i32.store (i32.const 32) (local.get $at))
    (i32.store (i32.const 36) (local.get $len))
    (drop (call $w (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40))))
  (func (export "_start") (local $i i32) (local $fd i32)
    (drop (call $accept (i32.const 16777216) (i32.const 0) (i32.const 0)))
    (local.set $fd (i32.load (i32.const 0)))
    ;; 50 iovecs at 64: each { ptr = 1 MiB, len = 24 MiB }.
    (loop $fill
      (i32.store (i32.add (i32.const 64) (i32.mul (local.get $i) (i32.const 8))) (i32.const 1048576))
      (i32.store (i32.add (i32.const 68) (i32.mul (local.get $i) (i32.const 8))) (i32.const 25165824))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $fill (i32.lt_u (local.get $i) (i32.const 50))))
    (drop (call $send (local.get $fd) (i32.const 64) (i32.const 50) (i32.const 0) (i32.const 8)))
    (call $print (i32.const 2048) (i32.const 5))
    ;; The first subscription reads the listener, so the host's socket layer takes the call.
    (i32.store8 (i32.const 4104) (i32.const 1))
    (i32.store (i32.const 4112) (i32.const 16777216))
    (if (i32.eq (call $poll (i32.const 4096) (i32.const 8192) (i32.const -1) (i32.const 8)) (i32.const 28))
      (then (call $print (i32.const 2064) (i32.const 12)))
      (else (call $print (i32.const 2080) (i32.const 11))))
    ;; Wait for the client to close: recv into a small buffer until it returns 0 bytes.
    (i32.store (i32.const 512) (i32.const 1024))
    (i32.store (i32.const 516) (i32.const 16))
    (loop $drain
      (drop (call $recv (local.get $fd) (i32.const 512) (i32.const 1) (i32.const 0) (i32.const 8) (i32.const 12)))
      (br_if $drain (i32.gt_u (i32.load (i32.const 8)) (i32.const 0))))))
