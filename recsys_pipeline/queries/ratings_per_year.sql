-- description: Ratings, active users and mean rating per calendar year (UTC)
SELECT year(timezone('UTC', "timestamp")) AS year,
       count(*) AS n_ratings,
       count(DISTINCT user_id) AS n_users,
       round(avg(rating), 3) AS mean_rating
FROM clean_ratings
GROUP BY ALL
ORDER BY year;
