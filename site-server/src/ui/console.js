// Live updates: the server re-renders the page's live part and pushes it (server-sent
// events); nothing reloads. Plain JavaScript, no build step, no external resource.
(function () {
  var live = document.getElementById("live");
  if (!live || !window.EventSource) return;
  var es = new EventSource("/live" + location.pathname + location.search);
  es.onmessage = function (e) {
    live.innerHTML = e.data;
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    document.body.classList.remove("stale");
  };
  es.onerror = function () { document.body.classList.add("stale"); };
})();
