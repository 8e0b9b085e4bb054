"""The report's inline stylesheet and script (no network at view time)."""

from __future__ import annotations

STATUS_COLOURS = {
    "passed": "#2e7d32",
    "failed": "#c62828",
    "error": "#8e24aa",
    "canceled": "#ef6c00",
    "skipped": "#757575",
    "reused": "#0277bd",
}

CSS = """
*{box-sizing:border-box}
body{font:14px system-ui,sans-serif;margin:0 auto;padding:1em 1.2em;color:#222;max-width:1600px}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:.6em 0 .3em}nav{margin:.4em 0 1em}
.tools{margin:.4em 0}#filter{width:28em;max-width:100%;padding:4px 6px;font:inherit}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #ddd;padding:3px 5px;text-align:left;overflow-wrap:anywhere;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0}th button{all:unset;cursor:pointer;display:block;width:100%;
font-weight:600;overflow-wrap:anywhere}th[aria-sort=ascending] button::after{content:" \\25B2"}
th[aria-sort=descending] button::after{content:" \\25BC"}
td.num,td.param{font-variant-numeric:tabular-nums}td.num{text-align:right}
td.num,td.status{white-space:nowrap;overflow-wrap:normal}
td.status{color:#fff;font-weight:600}td.run{font-size:11px}
tr.cell[hidden]{display:none}
.badge{display:inline-block;padding:1px 7px;margin-right:5px;border-radius:3px;color:#fff;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}h3.script{flex-basis:100%;margin:.8em 0 0}
figure{margin:0;max-width:100%}figure.wide{display:flex;flex-wrap:wrap;gap:8px;flex-basis:100%}
svg.chart{border:1px solid #eee;background:#fff;max-width:100%;height:auto}
svg .axis{stroke:#999}svg .grid{stroke:#eee}svg .tick{font-size:10px;fill:#555}
svg .label{font-size:11px;fill:#333}svg .title{font-size:12px;font-weight:600}svg .cellv{font-size:10px}
svg rect.empty{fill:#f6f6f6;stroke:#ddd}
.legend{list-style:none;padding:0;margin:2px 0 0;font-size:11px;max-width:420px;max-height:9em;overflow:auto}
.legend li{display:inline-block;margin-right:10px}.swatch{display:inline-block;width:10px;height:10px;
margin-right:3px;vertical-align:middle}
.failure{border-left:4px solid #c62828;padding:2px 10px;margin:8px 0;background:#fff7f7}
pre.tail{background:#f7f7f7;padding:6px;overflow:auto;max-height:24em;font-size:12px;white-space:pre-wrap;
overflow-wrap:anywhere}
section.run{border-top:1px solid #eee;padding:4px 0}.images{display:flex;flex-wrap:wrap;gap:8px}
figure.image img{max-width:320px;max-height:260px;border:1px solid #ddd;background:#fff}
figure.image figcaption{font-size:11px;color:#555}.note{background:#fff8e1;padding:4px 10px;border:1px solid #ffe082}
.folder{font-size:11px;color:#666}
""" + "".join(f"td.status.{o},.badge.{o}{{background:{c}}}" for o, c in STATUS_COLOURS.items())

# Filtering, sorting, and their state in the address (#filter=...&sort=COLUMN:asc), so a
# link to the page can carry a view. The script also records the matrix's rendered width
# on <body> (data-table-width, data-page-width): the layout facts the tests check.
SCRIPT = """
(function(){
  var table=document.getElementById('matrix'), body=table.tBodies[0], input=document.getElementById('filter');
  var heads=Array.prototype.slice.call(table.tHead.rows[0].cells);
  var rows=Array.prototype.slice.call(body.rows);
  var state={filter:'',sort:null,dir:'asc'};
  function text(td){return td.dataset.v!==undefined?td.dataset.v:td.textContent;}
  function count(){
    var shown=rows.filter(function(r){return !r.hidden;}), counts={};
    shown.forEach(function(r){var s=r.dataset.status;counts[s]=(counts[s]||0)+1;});
    document.getElementById('rendered').textContent=(shown.length===rows.length?rows.length+' cells shown: ':
      shown.length+' of '+rows.length+' cells shown: ')+
      Object.keys(counts).sort().map(function(k){return counts[k]+' '+k;}).join(', ');
  }
  function filter(q){
    state.filter=q;var words=q.toLowerCase().split(/\\s+/).filter(Boolean);
    rows.forEach(function(r){var t=(r.dataset.cell+' '+r.textContent).toLowerCase();
      r.hidden=!words.every(function(w){return t.indexOf(w)>=0;});});
    count();
  }
  function sort(col,dir){
    var th=heads[col];if(!th)return;state.sort=col;state.dir=dir;
    heads.forEach(function(h){h.removeAttribute('aria-sort');});
    th.setAttribute('aria-sort',dir==='asc'?'ascending':'descending');
    var numeric=th.dataset.type!=='text';
    var list=rows.slice().sort(function(a,b){
      var x=text(a.cells[col]),y=text(b.cells[col]),c;
      if(numeric){var nx=parseFloat(x),ny=parseFloat(y);
        if(isNaN(nx)&&isNaN(ny))c=0;else if(isNaN(nx))return 1;else if(isNaN(ny))return -1;else c=nx-ny;}
      else c=x.localeCompare(y,undefined,{numeric:true});
      return dir==='asc'?c:-c;});
    list.forEach(function(r){body.appendChild(r);});
  }
  function save(){
    var parts=[];if(state.filter)parts.push('filter='+encodeURIComponent(state.filter));
    if(state.sort!==null)parts.push('sort='+encodeURIComponent(heads[state.sort].textContent)+':'+state.dir);
    history.replaceState(null,'',parts.length?'#'+parts.join('&'):location.pathname+location.search);
  }
  heads.forEach(function(th,col){th.querySelector('button').addEventListener('click',function(){
    sort(col,state.sort===col&&state.dir==='asc'?'desc':'asc');save();});});
  input.addEventListener('input',function(){filter(input.value);save();});
  var hash=location.hash.slice(1);
  if(hash.indexOf('=')>0){hash.split('&').forEach(function(kv){
    var i=kv.indexOf('='),k=kv.slice(0,i),v=decodeURIComponent(kv.slice(i+1));
    if(k==='filter'){input.value=v;filter(v);}
    if(k==='sort'){var j=v.lastIndexOf(':'),name=j>0?v.slice(0,j):v,dir=j>0?v.slice(j+1):'asc';
      heads.forEach(function(th,col){if(th.textContent===name)sort(col,dir==='desc'?'desc':'asc');});}
  });}
  count();
  document.body.dataset.tableWidth=Math.ceil(table.getBoundingClientRect().width);
  document.body.dataset.pageWidth=document.documentElement.scrollWidth;
})();
"""
