{#-
    Fails if the label looks broken: an empty mart, or a churn rate outside 5%..60% (the IBM Telco
    sample churns about 27%). A model trained on a near-constant label would look accurate and be useless.
-#}
{{ config(tags=['churn']) }}

with

label_balance as (

    select
        count(*) as customers,
        avg(cast(churned as double precision)) as churn_rate
    from {{ ref('churn_features') }}

)

select *
from label_balance
where customers = 0
    or churn_rate is null
    or churn_rate < 0.05
    or churn_rate > 0.60
