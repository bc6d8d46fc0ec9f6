// The console's scanner (static file: the CSP allows no inline script and no inline handler). A section marked
// data-scanner="label" reads Digital Link QR codes with the phone's camera: each new label either opens its part
// (data-open-url?code=...) or, with "several" ticked, joins the list form (data-target-form) as a hidden `code`
// field. data-scanner="vin" reads a VIN barcode (Code 39, Code 128, Data Matrix) into an input (data-target-input).
// Frames are decoded by the browser's BarcodeDetector where there is one, else posted to data-frame-url, where the
// service decodes them with zxing-cpp. Without JavaScript the sections stay hidden and the photo upload does the work.
// A VIN input (with a #vin-live-error element naming it) is checked as it is typed: ISO 3779 characters and the
// check digit of 49 CFR 565 / GB 16735; the service checks again before anything is sent.
(function () {
  "use strict";

  var LABEL_FORMATS = ["qr_code"];
  var VIN_FORMATS = ["code_39", "code_128", "data_matrix"];
  var DETECT_EVERY_MS = 200;
  var POST_EVERY_MS = 900;

  function say(section, text) {
    var status = section.querySelector("[data-camera-status]");
    if (status) status.textContent = text;
  }

  // The GTIN and serial of a Digital Link, for the list shown while scanning (the service parses it for real).
  function describe(text) {
    var match = /\/01\/(\d{8,14})(?:\/10\/[^/?#]+)?\/21\/([^/?#]+)/.exec(text);
    if (!match) return null;
    try {
      return { gtin: match[1], serial: decodeURIComponent(match[2]) };
    } catch (error) {
      return null;
    }
  }

  function makeDetector(formats) {
    if (!("BarcodeDetector" in window)) return Promise.resolve(null);
    return window.BarcodeDetector.getSupportedFormats().then(function (supported) {
      var wanted = formats.filter(function (format) { return supported.indexOf(format) >= 0; });
      return wanted.length ? new window.BarcodeDetector({ formats: wanted }) : null;
    }, function () { return null; });
  }

  function Scanner(section) {
    this.section = section;
    this.kind = section.getAttribute("data-scanner");
    this.video = section.querySelector("video");
    this.startButton = section.querySelector("[data-camera-start]");
    this.stopButton = section.querySelector("[data-camera-stop]");
    this.reviewButton = section.querySelector("[data-camera-review]");
    this.manyBox = section.querySelector("[data-camera-many]");
    this.found = section.querySelector("[data-camera-found]");
    this.canvas = document.createElement("canvas");
    this.seen = {};
    this.count = 0;
    this.stream = null;
    this.detector = null;
    this.running = false;
    this.busy = false;
    var self = this;
    this.startButton.addEventListener("click", function () { self.start(); });
    if (this.stopButton) this.stopButton.addEventListener("click", function () { self.stop(); });
    if (this.reviewButton) this.reviewButton.addEventListener("click", function () { self.review(); });
    document.addEventListener("visibilitychange", function () { if (document.hidden) self.stop(); });
    section.hidden = false;
  }

  Scanner.prototype.start = function () {
    var self = this;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      say(this.section, this.section.getAttribute("data-msg-unsupported"));
      return;
    }
    navigator.mediaDevices.getUserMedia({ video: { facingMode: { ideal: "environment" } }, audio: false }).then(function (stream) {
      self.stream = stream;
      self.video.srcObject = stream;
      self.video.hidden = false;
      self.startButton.hidden = true;
      if (self.stopButton) self.stopButton.hidden = false;
      return self.video.play();
    }).then(function () {
      return makeDetector(self.kind === "vin" ? VIN_FORMATS : LABEL_FORMATS);
    }).then(function (detector) {
      self.detector = detector;
      self.running = true;
      self.tick();
    }).catch(function () {
      say(self.section, self.section.getAttribute("data-msg-denied"));
      self.stop();
    });
  };

  Scanner.prototype.stop = function () {
    this.running = false;
    if (this.stream) {
      this.stream.getTracks().forEach(function (track) { track.stop(); });
      this.stream = null;
    }
    this.video.hidden = true;
    this.startButton.hidden = false;
    if (this.stopButton) this.stopButton.hidden = true;
  };

  Scanner.prototype.tick = function () {
    var self = this;
    if (!this.running) return;
    if (this.busy || this.video.readyState < 2) {
      window.setTimeout(function () { self.tick(); }, DETECT_EVERY_MS);
      return;
    }
    this.busy = true;
    var read = this.detector ? this.detect() : this.post();
    read.then(function (texts) {
      self.busy = false;
      texts.forEach(function (text) { self.take(text); });
    }, function () {
      self.busy = false;
    }).then(function () {
      window.setTimeout(function () { self.tick(); }, self.detector ? DETECT_EVERY_MS : POST_EVERY_MS);
    });
  };

  Scanner.prototype.detect = function () {
    return this.detector.detect(this.video).then(function (codes) {
      return codes.map(function (code) { return code.rawValue; });
    });
  };

  // A frame to the service (zxing-cpp), for a browser without BarcodeDetector.
  Scanner.prototype.post = function () {
    var self = this;
    var video = this.video;
    this.canvas.width = video.videoWidth;
    this.canvas.height = video.videoHeight;
    this.canvas.getContext("2d").drawImage(video, 0, 0);
    return new Promise(function (resolve) {
      self.canvas.toBlob(resolve, "image/jpeg", 0.85);
    }).then(function (blob) {
      if (!blob) return [];
      var body = new FormData();
      body.append("csrf_token", self.section.getAttribute("data-csrf"));
      body.append("kind", self.kind === "vin" ? "vin" : "label");
      body.append("image", blob, "frame.jpg");
      return fetch(self.section.getAttribute("data-frame-url"), {
        method: "POST", body: body, credentials: "same-origin", headers: { Accept: "application/json" },
      }).then(function (response) {
        return response.ok ? response.json() : {};
      }).then(function (answer) {
        if (self.kind === "vin") return answer.vins || [];
        return (answer.codes || []).filter(function (code) { return !code.error; }).map(function (code) { return code.text; });
      });
    });
  };

  Scanner.prototype.take = function (text) {
    if (!text || this.seen[text]) return;
    this.seen[text] = true;
    if (navigator.vibrate) navigator.vibrate(60);
    if (this.kind === "vin") {
      var vin = text.trim().toUpperCase();
      if (vin.length === 18 && vin.charAt(0) === "I") vin = vin.slice(1);
      var input = document.getElementById(this.section.getAttribute("data-target-input"));
      if (!input || !/^[A-HJ-NPR-Z0-9]{17}$/.test(vin)) return;
      input.value = vin;
      input.dispatchEvent(new Event("input", { bubbles: true }));
      say(this.section, this.section.getAttribute("data-msg-found"));
      this.stop();
      return;
    }
    var label = describe(text);
    if (!label) return;
    var many = this.manyBox ? this.manyBox.checked : this.section.getAttribute("data-many") === "yes";
    if (!many) {
      this.stop();
      window.location.assign(this.section.getAttribute("data-open-url") + "?code=" + encodeURIComponent(text));
      return;
    }
    var form = document.getElementById(this.section.getAttribute("data-target-form"));
    if (!form) return;
    var field = document.createElement("input");
    field.type = "hidden";
    field.name = "code";
    field.value = text;
    form.appendChild(field);
    this.count += 1;
    if (this.found) {
      var row = document.createElement("li");
      row.textContent = label.serial + " · " + label.gtin;
      this.found.appendChild(row);
    }
    if (this.reviewButton) this.reviewButton.hidden = false;
    say(this.section, (this.section.getAttribute("data-msg-found") || "").replace("%(count)s", String(this.count)));
  };

  Scanner.prototype.review = function () {
    var form = document.getElementById(this.section.getAttribute("data-target-form"));
    this.stop();
    if (!form) return;
    if (form.requestSubmit) {
      form.requestSubmit();  // no submitter: the form's own action (/console/scan), no button's name sent
    } else {
      form.submit();
    }
  };

  // --- the VIN check digit (49 CFR 565.15; GB 16735), as partledger.ids.vin_check_digit computes it ---------------

  var VALUES = { A: 1, B: 2, C: 3, D: 4, E: 5, F: 6, G: 7, H: 8, J: 1, K: 2, L: 3, M: 4, N: 5, P: 7, R: 9,
                 S: 2, T: 3, U: 4, V: 5, W: 6, X: 7, Y: 8, Z: 9 };
  var WEIGHTS = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];

  function vinProblem(vin) {
    if (!/^[A-HJ-NPR-Z0-9]{17}$/.test(vin)) return "format";
    var sum = 0;
    for (var i = 0; i < 17; i += 1) {
      var c = vin.charAt(i);
      sum += (c >= "0" && c <= "9" ? Number(c) : VALUES[c]) * WEIGHTS[i];
    }
    var remainder = sum % 11;
    return vin.charAt(8) === (remainder === 10 ? "X" : String(remainder)) ? null : "check";
  }

  function watchVin(message) {
    var input = document.getElementById(message.getAttribute("data-vin-error-for"));
    if (!input) return;
    function check() {
      var vin = input.value.trim().toUpperCase();
      var problem = vin.length === 0 || (vin.length < 17 && document.activeElement === input) ? null : vinProblem(vin);
      var text = problem === "format" ? message.getAttribute("data-msg-format") : problem === "check" ? message.getAttribute("data-msg-check") : "";
      message.textContent = text;
      message.hidden = !text;
      input.setCustomValidity(text);
      if (text) {
        input.setAttribute("aria-invalid", "true");
        input.setAttribute("aria-errormessage", message.id);
      } else if (!input.closest(".invalid")) {
        input.removeAttribute("aria-invalid");
      }
    }
    input.addEventListener("input", check);
    input.addEventListener("blur", check);
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-scanner]"), function (section) { new Scanner(section); });
    Array.prototype.forEach.call(document.querySelectorAll("[data-vin-error-for]"), watchVin);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
