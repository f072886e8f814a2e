// The document form, in the browser: each chosen file is checked (type, size) before anything is sent, with a
// French message next to its field; the upload then shows its progress. Without this script the form still
// works: the server checks the same things and answers with the same messages.
(function () {
  "use strict";
  var form = document.getElementById("document-form");
  if (!form) { return; }
  var maxUpload = parseInt(form.getAttribute("data-max-upload") || "0", 10);

  function size(n) {
    var units = [["Go", 1073741824], ["Mo", 1048576], ["Ko", 1024]];
    for (var i = 0; i < units.length; i++) {
      if (n >= units[i][1]) { return (n / units[i][1]).toFixed(1).replace(/\.0$/, "").replace(".", ",") + " " + units[i][0]; }
    }
    return n + " octets";
  }

  function accepted(file, accept) {
    if (!accept) { return true; }
    var name = file.name.toLowerCase();
    return accept.split(",").some(function (a) {
      a = a.trim().toLowerCase();
      if (!a) { return false; }
      if (a.charAt(0) === ".") { return name.slice(-a.length) === a; }
      if (a === (file.type || "").toLowerCase()) { return true; }
      var ext = { "application/pdf": ".pdf", "application/xml": ".xml", "text/xml": ".xml" }[a];
      return !file.type && ext && name.slice(-ext.length) === ext;
    });
  }

  function check(input) {
    var own = parseInt(input.getAttribute("data-max-size") || "0", 10);
    var limit = own && maxUpload ? Math.min(own, maxUpload) : (own || maxUpload);  // as the server: the smaller
    var label = input.getAttribute("data-label") || input.name;
    var problems = [];
    Array.prototype.forEach.call(input.files || [], function (file) {
      if (!accepted(file, input.getAttribute("accept"))) {
        problems.push("« " + file.name + " » n'est pas d'un type accepté par « " + label + " » (" + input.getAttribute("accept") + ").");
      } else if (limit && file.size > limit) {
        problems.push("« " + file.name + " » (" + size(file.size) + ") dépasse la taille permise pour « " + label + " » (" + size(limit) + ").");
      } else if (file.size === 0) {
        problems.push("« " + file.name + " » est vide.");
      }
    });
    var box = document.getElementById("c-" + input.name);
    if (problems.length) {
      box.textContent = problems.join(" ");
      box.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", box.id);
    } else {
      box.textContent = "";
      box.hidden = true;
      input.removeAttribute("aria-invalid");
      input.removeAttribute("aria-describedby");
    }
    return problems.length === 0;
  }

  var inputs = form.querySelectorAll("input[type=file]");
  Array.prototype.forEach.call(inputs, function (input) {
    input.addEventListener("change", function () { check(input); });
  });

  form.addEventListener("submit", function (event) {
    var firstBad = null, total = 0;
    Array.prototype.forEach.call(inputs, function (input) {
      if (!check(input) && !firstBad) { firstBad = input; }
      Array.prototype.forEach.call(input.files || [], function (f) { total += f.size; });
    });
    if (firstBad) { event.preventDefault(); firstBad.focus(); return; }
    if (!total || !window.XMLHttpRequest || !window.FormData) { return; }
    event.preventDefault();
    var data = new FormData(form, event.submitter || undefined);
    var status = document.getElementById("envoi");
    var bar = document.getElementById("envoi-progres");
    var text = document.getElementById("envoi-texte");
    status.hidden = false;
    Array.prototype.forEach.call(form.querySelectorAll("button[type=submit]"), function (b) { b.disabled = true; });
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.getAttribute("action"));
    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) {
        var pct = Math.round(100 * e.loaded / e.total);
        bar.value = pct;
        text.textContent = "Envoi des fichiers : " + pct + " % (" + size(e.loaded) + " sur " + size(e.total) + ")";
      }
    });
    xhr.addEventListener("load", function () {
      if (xhr.responseURL && xhr.responseURL.split("#")[0] !== new URL(form.getAttribute("action"), location.href).href) {
        location.assign(xhr.responseURL);  // the document's page after a redirect
      } else {
        document.open(); document.write(xhr.responseText); document.close();  // the form with the server's errors
      }
    });
    xhr.addEventListener("error", function () {
      text.textContent = "L'envoi a échoué (connexion interrompue) : rien n'a été enregistré, réessayez.";
      Array.prototype.forEach.call(form.querySelectorAll("button[type=submit]"), function (b) { b.disabled = false; });
    });
    text.textContent = "Envoi des fichiers…";
    xhr.send(data);
  });
}());
