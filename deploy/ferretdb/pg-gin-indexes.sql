-- Applied by ferretdb.sh to FerretDB's database in its private PostgreSQL cluster.
--
-- FerretDB 1.24's PostgreSQL backend pushes an equality filter {field: value} down as
-- `_jsonb -> 'field' @> 'value'`, but builds every index (the _id one included) as a btree on
-- `(_jsonb -> 'field')`, which cannot answer `@>`: each pushed-down filter is a sequential
-- scan. This event trigger gives every such btree index FerretDB creates a GIN twin on the
-- same expression, which can; a second trigger drops the twin with its index (dropping the
-- collection drops both anyway).
CREATE OR REPLACE FUNCTION casereview_gin_twin() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  cmd record;
  expr text;
  tbl regclass;
  idx name;
BEGIN
  FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE INDEX' LOOP
    SELECT i.indrelid::regclass, pg_get_indexdef(cmd.objid, 1, true), c.relname
      INTO tbl, expr, idx
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
     WHERE i.indexrelid = cmd.objid AND a.amname = 'btree' AND i.indnatts = 1;
    IF expr IS NOT NULL AND expr ~ '^\(?_jsonb -> ''[^'']+''::text\)?$' THEN
      EXECUTE format('CREATE INDEX %I ON %s USING gin ((%s)) WITH (fastupdate = off)',
                     left(idx, 59) || '_gin',
                     tbl, expr);
    END IF;
  END LOOP;
END
$fn$;

DROP EVENT TRIGGER IF EXISTS casereview_gin_twin;
CREATE EVENT TRIGGER casereview_gin_twin ON ddl_command_end WHEN TAG IN ('CREATE INDEX')
  EXECUTE FUNCTION casereview_gin_twin();

-- A dropped index takes its twin with it: a twin left behind would still be written on every
-- change of its table's documents, for no reader.
CREATE OR REPLACE FUNCTION casereview_gin_twin_drop() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  obj record;
BEGIN
  FOR obj IN SELECT * FROM pg_event_trigger_dropped_objects()
              WHERE object_type = 'index' AND object_name !~ '_gin$' LOOP
    EXECUTE format('DROP INDEX IF EXISTS %I.%I', obj.schema_name, left(obj.object_name, 59) || '_gin');
  END LOOP;
END
$fn$;

DROP EVENT TRIGGER IF EXISTS casereview_gin_twin_drop;
CREATE EVENT TRIGGER casereview_gin_twin_drop ON sql_drop WHEN TAG IN ('DROP INDEX')
  EXECUTE FUNCTION casereview_gin_twin_drop();
