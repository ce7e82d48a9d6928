{#
    Use a model's custom schema verbatim (`staging`, `marts`) instead of dbt's default
    `<target schema>_<custom schema>`, so consumers find the feature mart at `marts.churn_features`
    on every target. Models without a custom schema still go to the target's schema.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
