// A wasi:http handler in JavaScript, built with componentize-js (StarlingMonkey) by build.sh.
// GET /: a greeting with a declared length. Anything else: the method and path, echoed.
addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  const body =
    url.pathname === "/" ? "hello from js\n" : `${event.request.method} ${url.pathname}\n`;
  event.respondWith(new Response(body, { headers: { "content-type": "text/plain" } }));
});
