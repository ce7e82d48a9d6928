{#-
    The population the churn champion scores (the `score_churn` DAG): one row per customer with the id and
    exactly the features of `churn_features`, without the label. Today every customer of the feature mart;
    a production project would restrict it to the active customers of the day.
-#}

select
    customer_id,
    is_female,
    is_senior_citizen,
    has_partner,
    has_dependents,
    tenure_months,
    contract_one_year,
    contract_two_year,
    has_paperless_billing,
    payment_electronic_check,
    payment_mailed_check,
    payment_bank_transfer,
    payment_credit_card,
    has_phone_service,
    has_multiple_lines,
    internet_dsl,
    internet_fiber_optic,
    internet_none,
    has_online_security,
    has_online_backup,
    has_device_protection,
    has_tech_support,
    has_streaming_tv,
    has_streaming_movies,
    monthly_charges,
    total_charges

from {{ ref('churn_features') }}
