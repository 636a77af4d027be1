-- description: Percentiles of the number of ratings per user
WITH per_user AS (SELECT user_id, count(*) AS n FROM clean_ratings GROUP BY user_id)
SELECT count(*) AS users,
       min(n) AS min,
       quantile_disc(n, 0.10) AS p10,
       quantile_disc(n, 0.25) AS p25,
       quantile_disc(n, 0.50) AS median,
       quantile_disc(n, 0.75) AS p75,
       quantile_disc(n, 0.90) AS p90,
       quantile_disc(n, 0.99) AS p99,
       max(n) AS max,
       round(avg(n), 1) AS mean
FROM per_user;
