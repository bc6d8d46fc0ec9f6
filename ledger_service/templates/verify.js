(function () {
  "use strict";
  var root = document.documentElement;
  var texts = JSON.parse(document.getElementById("texts").textContent);
  function lang() { return root.lang.indexOf("zh") === 0 ? "zh" : "en"; }
  function setLang(next) {
    root.lang = next === "en" ? "en" : "zh-CN";
    document.cookie = "lang=" + next + "; path=/; max-age=31536000; samesite=lax";
    var url = new URL(window.location.href);
    url.searchParams.set("lang", next);
    window.history.replaceState(null, "", url);
    var link = document.getElementById("lang-switch");
    link.setAttribute("href", "?lang=" + (next === "en" ? "zh" : "en"));
    document.title = texts.title[next];
  }
  document.getElementById("lang-switch").addEventListener("click", function (event) {
    event.preventDefault();
    setLang(lang() === "zh" ? "en" : "zh");
  });
  function both(pair) {
    return '<span lang="zh" class="zh">' + escapeHtml(pair.zh) + '</span><span lang="en" class="en">' + escapeHtml(pair.en) + "</span>";
  }
  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) { return "&#" + c.charCodeAt(0) + ";"; });
  }
  function show(box, status, answer) {
    box.className = "result";
    if (status === 429) { box.innerHTML = both(texts.busy); box.classList.add("warning"); return; }
    if (!answer || !answer.verdict) { box.innerHTML = both(texts.failed); box.classList.add("warning"); return; }
    var parts = [];
    if (answer.vin_match === true) parts.push(both(texts.vin_match));
    if (answer.vin_match === false) parts.push(both(texts.flags.vin_mismatch));
    answer.flags.forEach(function (kind) { if (kind !== "vin_mismatch" && texts.flags[kind]) parts.push(both(texts.flags[kind])); });
    if (!parts.length) parts.push(both(texts.no_concern));
    box.innerHTML = parts.join("<br>");
    box.classList.add(answer.flags.length ? "danger" : "ok");
  }
  function check(box, extra) {
    var body = { uri: window.location.href.split("#")[0] };
    Object.keys(extra).forEach(function (key) { body[key] = extra[key]; });
    box.className = "result"; box.innerHTML = both(texts.checking);
    fetch("/v1/scan", { method: "POST", headers: { "Content-Type": "application/json", "Accept": "application/json" }, body: JSON.stringify(body) })
      .then(function (reply) { return reply.json().then(function (json) { show(box, reply.status, json); }, function () { show(box, reply.status, null); }); })
      .catch(function () { show(box, 0, null); });
  }
  var vinForm = document.getElementById("vin-form");
  if (vinForm) vinForm.addEventListener("submit", function (event) {
    event.preventDefault();
    check(document.getElementById("vin-result"), { vin: document.getElementById("vin").value.trim(), context: "vehicle" });
  });
  var buying = document.getElementById("buying-new");
  if (buying) buying.addEventListener("click", function () { check(document.getElementById("buying-result"), { context: "purchase" }); });
  var locate = document.getElementById("share-location");
  if (locate && navigator.geolocation) locate.addEventListener("click", function () {
    var box = document.getElementById("location-result");
    navigator.geolocation.getCurrentPosition(function (position) {
      check(box, { lat: Math.round(position.coords.latitude * 10) / 10, lon: Math.round(position.coords.longitude * 10) / 10 });
    }, function () { box.innerHTML = both(texts.no_location); });
  });
})();
